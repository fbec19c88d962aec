from ledger_handler import LedgerHandlerMaker

ledger = LedgerHandlerMaker()
