from twisted.application.service import ServiceMaker

paychan = ServiceMaker(
    "paychan", "twisted_paychan.tap", "Serve bitcoinj-compatible payment channels.", "paychan"
)
