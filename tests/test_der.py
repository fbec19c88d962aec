from twisted_paychan.bitcoin import der
import pytest

def test_rejects_empty_signature():
    with pytest.raises(der.SignatureEncodingError):
        der.parse_signature(b"")
