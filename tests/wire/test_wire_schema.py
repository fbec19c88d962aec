"""
The schema, checked field by field against PROTOCOL.md §2.2-§2.5 (transcribed here by hand, so a
slip in the .proto and a slip in this table would have to agree to go unnoticed), and the
committed generated code checked against a fresh protoc run.
"""

from pathlib import Path

from google.protobuf.descriptor import FieldDescriptor

from twisted_paychan.wire import messages as m
from twisted_paychan.wire import regenerate

REQUIRED = "required"
OPTIONAL = "optional"

# message: [(field, number, label, type or message name, default or None)]
SPEC = {
    "TwoWayChannelMessage": [
        ("type", 1, REQUIRED, "TwoWayChannelMessage.MessageType", None),
        ("client_version", 2, OPTIONAL, "ClientVersion", None),
        ("server_version", 3, OPTIONAL, "ServerVersion", None),
        ("initiate", 4, OPTIONAL, "Initiate", None),
        ("provide_refund", 5, OPTIONAL, "ProvideRefund", None),
        ("return_refund", 6, OPTIONAL, "ReturnRefund", None),
        ("provide_contract", 7, OPTIONAL, "ProvideContract", None),
        ("update_payment", 8, OPTIONAL, "UpdatePayment", None),
        ("settlement", 9, OPTIONAL, "Settlement", None),
        ("error", 10, OPTIONAL, "Error", None),
        ("payment_ack", 11, OPTIONAL, "PaymentAck", None),
    ],
    "ClientVersion": [
        ("major", 1, REQUIRED, "int32", None),
        ("minor", 2, OPTIONAL, "int32", 0),
        ("previous_channel_contract_hash", 3, OPTIONAL, "bytes", None),
        ("time_window_secs", 4, OPTIONAL, "uint64", 86340),
    ],
    "ServerVersion": [
        ("major", 1, REQUIRED, "int32", None),
        ("minor", 2, OPTIONAL, "int32", 0),
    ],
    "Initiate": [
        ("multisig_key", 1, REQUIRED, "bytes", None),
        ("min_accepted_channel_size", 2, REQUIRED, "uint64", None),
        ("expire_time_secs", 3, REQUIRED, "uint64", None),
        ("min_payment", 4, REQUIRED, "uint64", None),
    ],
    "ProvideRefund": [
        ("multisig_key", 1, REQUIRED, "bytes", None),
        ("tx", 2, REQUIRED, "bytes", None),
    ],
    "ReturnRefund": [("signature", 1, REQUIRED, "bytes", None)],
    "ProvideContract": [
        ("tx", 1, REQUIRED, "bytes", None),
        ("initial_payment", 2, REQUIRED, "UpdatePayment", None),
        ("client_key", 3, OPTIONAL, "bytes", None),
    ],
    "UpdatePayment": [
        ("client_change_value", 1, REQUIRED, "uint64", None),
        ("signature", 2, REQUIRED, "bytes", None),
        ("info", 3, OPTIONAL, "bytes", None),
    ],
    "PaymentAck": [("info", 1, OPTIONAL, "bytes", None)],
    "Settlement": [("tx", 3, REQUIRED, "bytes", None)],
    "Error": [
        ("code", 1, OPTIONAL, "Error.ErrorCode", "OTHER"),
        ("explanation", 2, OPTIONAL, "string", None),
        ("expected_value", 3, OPTIONAL, "uint64", None),
    ],
}

MESSAGE_TYPES = {
    "CLIENT_VERSION": 1,
    "SERVER_VERSION": 2,
    "INITIATE": 3,
    "PROVIDE_REFUND": 4,
    "RETURN_REFUND": 5,
    "PROVIDE_CONTRACT": 6,
    "CHANNEL_OPEN": 7,
    "UPDATE_PAYMENT": 8,
    "CLOSE": 9,
    "ERROR": 10,
    "PAYMENT_ACK": 11,
}

ERROR_CODES = {
    "TIMEOUT": 1,
    "SYNTAX_ERROR": 2,
    "NO_ACCEPTABLE_VERSION": 3,
    "BAD_TRANSACTION": 4,
    "TIME_WINDOW_UNACCEPTABLE": 5,
    "CHANNEL_VALUE_TOO_LARGE": 6,
    "MIN_PAYMENT_TOO_LARGE": 7,
    "OTHER": 8,
}

_SCALAR_NAMES = {
    FieldDescriptor.TYPE_INT32: "int32",
    FieldDescriptor.TYPE_UINT64: "uint64",
    FieldDescriptor.TYPE_BYTES: "bytes",
    FieldDescriptor.TYPE_STRING: "string",
}


def _type_name(field: FieldDescriptor) -> str:
    if field.message_type is not None:
        return field.message_type.full_name.removeprefix("paymentchannels.")
    if field.enum_type is not None:
        return field.enum_type.full_name.removeprefix("paymentchannels.")
    return _SCALAR_NAMES[field.type]


def test_file_is_proto2_in_package_paymentchannels() -> None:
    file = m.TwoWayChannelMessage.DESCRIPTOR.file
    assert file.package == "paymentchannels"
    assert m.TwoWayChannelMessage.DESCRIPTOR.full_name == "paymentchannels.TwoWayChannelMessage"
    assert set(file.message_types_by_name) == set(SPEC)


def test_every_field_matches_the_spec() -> None:
    file = m.TwoWayChannelMessage.DESCRIPTOR.file
    for message_name, fields in SPEC.items():
        descriptor = file.message_types_by_name[message_name]
        actual = []
        for f in descriptor.fields:
            label = REQUIRED if f.is_required else OPTIONAL
            default = None
            if f.has_default_value:
                default = f.default_value
                if f.enum_type is not None:
                    default = f.enum_type.values_by_number[default].name
            actual.append((f.name, f.number, label, _type_name(f), default))
        assert actual == fields, message_name


def test_enums_match_the_spec() -> None:
    assert {v.name: v.number for v in m.MessageType.DESCRIPTOR.values} == MESSAGE_TYPES
    assert {v.name: v.number for v in m.ErrorCode.DESCRIPTOR.values} == ERROR_CODES
    assert m.MessageType.DESCRIPTOR.containing_type is m.TwoWayChannelMessage.DESCRIPTOR
    assert m.ErrorCode.DESCRIPTOR.containing_type is m.Error.DESCRIPTOR


def test_committed_generated_code_is_fresh() -> None:
    stale = regenerate.stale_files()
    assert stale == [], f"regenerate with `python -m twisted_paychan.wire.regenerate`: {stale}"


def test_check_mode_reports_fresh() -> None:
    assert regenerate.main(["--check"]) == 0


def test_check_detects_a_stale_copy(tmp_path: Path) -> None:
    for name in regenerate.GENERATED_FILES:
        (tmp_path / name).write_bytes((regenerate.PACKAGE_DIR / name).read_bytes())
    assert regenerate.is_up_to_date(tmp_path)
    (tmp_path / "paymentchannel_pb2.pyi").write_bytes(b"# edited by hand\n")
    assert regenerate.stale_files(tmp_path) == ["paymentchannel_pb2.pyi"]


def test_generated_module_imports_nothing_of_ours() -> None:
    source = (regenerate.PACKAGE_DIR / "paymentchannel_pb2.py").read_text()
    imports = [line for line in source.splitlines() if line.startswith(("import ", "from "))]
    assert imports and all(line.startswith("from google.protobuf") for line in imports), imports
