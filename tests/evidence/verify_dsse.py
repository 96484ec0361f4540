"""An independent verifier of atrest's signed evidence: securesystemslib's DSSE envelope and
Ed25519 key (the library in-toto and TUF verify with), and the statement's subjects by sha256.

Usage: verify_dsse.py ENVELOPE PUBLIC_KEY_PEM
Exit 0 when the signature and every subject's digest verify; 1 otherwise (printed)."""

import hashlib
import json
import os
import sys

from cryptography.hazmat.primitives import serialization
from securesystemslib.dsse import Envelope
from securesystemslib.signer import SSlibKey


def main() -> int:
    envelope_path, key_path = sys.argv[1], sys.argv[2]
    with open(key_path, "rb") as f:
        key = SSlibKey.from_crypto(serialization.load_pem_public_key(f.read()))
    with open(envelope_path, "rb") as f:
        envelope = Envelope.from_dict(json.load(f))
    try:
        envelope.verify([key], 1)
    except Exception as e:  # securesystemslib raises VerificationError
        print(f"signature: {e}")
        return 1
    if envelope.payload_type != "application/vnd.in-toto+json":
        print(f"payload type {envelope.payload_type}")
        return 1
    statement = json.loads(envelope.payload)
    assert statement["_type"] == "https://in-toto.io/Statement/v1", statement["_type"]
    assert statement["predicateType"] == "https://in-toto.io/attestation/test-result/v0.1"
    base = os.path.dirname(envelope_path)
    for subject in statement["subject"]:
        with open(os.path.join(base, subject["name"]), "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
        if digest != subject["digest"]["sha256"]:
            print(f"{subject['name']}: sha256 {digest}, signed {subject['digest']['sha256']}")
            return 1
    print(f"verified: {statement['predicate']['result']}, key {key.keyid}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
