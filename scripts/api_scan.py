"""Schemathesis against a live Chartroom server, as one role (used by scripts/api-scan).

Run as a program, it enrolls a device and logs a user in:
    python3 api_scan.py login URL CA_FILE TOKEN USERNAME PASSWORD   -> prints the session as JSON
Imported by Schemathesis (SCHEMATHESIS_HOOKS=api_scan), it signs every request it sends with that
session (CHARTROOM_SCAN_SESSION: bearer token plus the device's proof header over the exact method,
path and query sent) and adds one check: no error response names a patient (CHARTROOM_SCAN_PHI: a
file of names and MRNs, one per line).
"""

import json
import os
import sys
import time

import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

PROOF_HEADER = "chartroom-proof"


def _key(seed_hex):
    return Ed25519PrivateKey.from_private_bytes(bytes.fromhex(seed_hex))


def login(url, ca, token, username, password):
    seed = os.urandom(32).hex()
    key = _key(seed)
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()
    enrolled = requests.post(f"{url}/v1/devices/enroll", json={"token": token, "device_public_key": public}, verify=ca)
    enrolled.raise_for_status()
    device = enrolled.json()["device_id"]
    nonce = requests.post(f"{url}/v1/auth/challenge", json={"device_id": device}, verify=ca)
    nonce.raise_for_status()
    nonce = nonce.json()["nonce"]
    signature = key.sign(f"chartroom-login-v1\n{device}\n{nonce}\n{username}".encode()).hex()
    body = {"device_id": device, "nonce": nonce, "signature": signature, "username": username, "password": password}
    tokens = requests.post(f"{url}/v1/auth/login", json=body, verify=ca)
    tokens.raise_for_status()
    return {"seed": seed, "device_id": device, "access_token": tokens.json()["access_token"]}


class Proof(requests.auth.AuthBase):
    """Signs the prepared request: its final path and query are what the server checks."""

    def __init__(self, session):
        self.key = _key(session["seed"])
        self.token = session["access_token"]

    def __call__(self, r):
        at = int(time.time() * 1000)
        message = f"chartroom-request-v1\n{r.method}\n{r.path_url}\n{at}\n{self.token}".encode()
        r.headers["Authorization"] = f"Bearer {self.token}"
        r.headers[PROOF_HEADER] = f"t={at},sig={self.key.sign(message).hex()}"
        return r


if __name__ != "__main__" and "CHARTROOM_SCAN_SESSION" in os.environ:
    import schemathesis

    _SESSION = json.loads(os.environ["CHARTROOM_SCAN_SESSION"])
    import re

    with open(os.environ["CHARTROOM_SCAN_PHI"], encoding="utf-8") as f:
        # Whole words, any case (as the e2e harness searches): short given names count too.
        _PHI = [(v, re.compile(r"\b" + re.escape(v) + r"\b", re.IGNORECASE)) for v in {l.strip() for l in f} if len(v) >= 3]

    @schemathesis.hook
    def before_call(context, case, kwargs):
        kwargs["auth"] = Proof(_SESSION)

    @schemathesis.check
    def no_phi_in_errors(ctx, response, case):
        if response.status_code < 400:
            return None
        text = response.text
        for value, pattern in _PHI:
            if pattern.search(text):
                raise AssertionError(f"an error response ({response.status_code}) names a patient: {value!r}")
        return None


if __name__ == "__main__":
    if len(sys.argv) != 7 or sys.argv[1] != "login":
        sys.exit(__doc__)
    print(json.dumps(login(*sys.argv[2:])))
