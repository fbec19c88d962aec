"""The dashboard's files on the API's endpoint: served without the token (they hold no data),
by name from the package only, with a policy that keeps the page to this server; the API
beside them still wants the token."""

import re

import pytest_twisted
import treq

from api_setup import ApiLoopback
from twisted_paychan.dashboard import FILES


@pytest_twisted.ensureDeferred
async def test_the_page_and_its_files(tmp_path):
    net = ApiLoopback(tmp_path)
    await net.start()
    try:
        for path, (_, kind) in FILES.items():
            response = await treq.get(net.url + path, persistent=False)
            body = await response.content()
            assert response.code == 200, path
            assert response.headers.getRawHeaders("content-type") == [kind]
            policy = response.headers.getRawHeaders("content-security-policy")[0]
            assert "default-src 'none'" in policy and "connect-src 'self'" in policy
            assert body
            # No URL of another site (the SVG namespace is a name, never fetched).
            assert not re.findall(rb"//[A-Za-z0-9-]+\.[A-Za-z0-9.-]+", body.replace(b"http://www.w3.org/2000/svg", b"")), path
        page = await (await treq.get(net.url + "/", persistent=False)).text()
        assert '<script src="/dashboard/app.js"' in page and "api.cookie" in page
        head = await treq.head(net.url + "/dashboard/app.js", persistent=False)
        assert head.code == 200
        for missing in ("/dashboard/", "/dashboard/../__init__.py", "/dashboard/app.js.map", "/index.html"):
            response = await treq.get(net.url + missing, persistent=False)
            await response.content()
            assert response.code in (401, 404), missing
        code, body = await net.call("GET", "/v1/info", token=None)
        assert code == 401
    finally:
        await net.stop()
