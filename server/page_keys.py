"""The page's owner key: issued and signed by the server, so that no client can choose one.

A page keeps its key in the browser's storage, so a reloaded page still owns its training and (in public mode) finds
its workspace. The key comes back from the browser on every load, which a client can fake: so the server hands out
``NONCE.SIGNATURE`` (an HMAC of a random nonce under the server's secret) and takes back only a key it signed; any
other value gets a fresh key. With the workspaces' secret (kept in the data dir) a key survives a restart.

Nothing here imports gradio.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets

NONCE_BYTES = 16


class PageKeys:
    """Issues page keys and recognises the ones it issued."""

    def __init__(self, secret: str | None = None) -> None:
        self._secret = (secret or secrets.token_hex(32)).encode()

    def _sign(self, nonce: str) -> str:
        return hmac.new(self._secret, f"page-key\0{nonce}".encode(), hashlib.sha256).hexdigest()[:32]

    def issue(self) -> str:
        """A new key no client could have made."""
        nonce = secrets.token_hex(NONCE_BYTES)
        return f"{nonce}.{self._sign(nonce)}"

    def is_issued(self, key: object) -> bool:
        """Whether ``key`` is one this server signed."""
        if not isinstance(key, str) or key.count(".") != 1:
            return False
        nonce, signature = key.split(".")
        return len(nonce) == 2 * NONCE_BYTES and hmac.compare_digest(signature, self._sign(nonce))

    def page_key(self, stored: object) -> str:
        """The key of a page that loads with ``stored`` from its browser: that key when this server issued it, else a
        fresh one."""
        return stored if self.is_issued(stored) else self.issue()

    def storage_secret(self) -> str:
        """The key gradio encrypts the browser's copy with. Gradio sends it to the page, so it is derived from the
        secret (stable across restarts like the secret) without revealing it."""
        return hmac.new(self._secret, b"browser-storage", hashlib.sha256).hexdigest()[:32]
