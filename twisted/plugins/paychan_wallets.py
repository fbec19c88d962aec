from twisted_paychan.wallet.backends import MemoryBackendMaker, SqliteBackendMaker

memory = MemoryBackendMaker()
sqlite = SqliteBackendMaker()
