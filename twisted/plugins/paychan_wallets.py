from twisted_paychan.wallet.backends import MemoryBackendMaker, SqliteBackendMaker
from twisted_paychan.wallet.signer_backend import SignerBackendMaker

memory = MemoryBackendMaker()
sqlite = SqliteBackendMaker()
signer = SignerBackendMaker()
