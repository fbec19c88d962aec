from keylog_wallet import KeylogBackendMaker

keylog = KeylogBackendMaker()
