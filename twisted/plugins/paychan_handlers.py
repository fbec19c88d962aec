from twisted_paychan.handlers.log import AcceptHandlerMaker, LogHandlerMaker
from twisted_paychan.handlers.webhook import WebhookHandlerMaker

accept = AcceptHandlerMaker()
log = LogHandlerMaker()
webhook = WebhookHandlerMaker()
