from twisted_paychan.handlers.log import LogHandlerMaker
from twisted_paychan.handlers.webhook import WebhookHandlerMaker

log = LogHandlerMaker()
webhook = WebhookHandlerMaker()
