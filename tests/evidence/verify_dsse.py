"""An independent verifier of atrest's signed evidence: securesystemslib's DSSE envelope and
Ed25519 key (the library in-toto and TUF verify with); the statement and its test-result
predicate against the in-toto attestation framework's own schema (the in-toto-attestation
package: its protobuf types, parsed strictly, and its validators); the statement's subjects by
sha256.

Usage: verify_dsse.py ENVELOPE PUBLIC_KEY_PEM
Exit 0 when the signature, the schema and every subject's digest verify; 1 otherwise
(printed)."""

import hashlib
import json
import os
import sys

from cryptography.hazmat.primitives import serialization
from google.protobuf import json_format
from in_toto_attestation.predicates.test_result.v0 import test_result_pb2
from in_toto_attestation.v1 import statement_pb2
from in_toto_attestation.v1.resource_descriptor import ResourceDescriptor
from in_toto_attestation.v1.statement import Statement
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
    try:
        schema_check(statement)
    except (ValueError, json_format.ParseError) as e:
        print(f"schema: {e}")
        return 1
    base = os.path.dirname(envelope_path)
    for subject in statement["subject"]:
        with open(os.path.join(base, subject["name"]), "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
        if digest != subject["digest"]["sha256"]:
            print(f"{subject['name']}: sha256 {digest}, signed {subject['digest']['sha256']}")
            return 1
    print(f"verified: {statement['predicate']['result']}, key {key.keyid}")
    return 0


def schema_check(statement: dict) -> None:
    """The statement and predicate as the in-toto attestation framework defines them: no
    unknown field, every type right, the framework's own validators pass."""
    pb = json_format.ParseDict(statement, statement_pb2.Statement())
    Statement.copy_from_pb(pb).validate()
    if pb.predicate_type != "https://in-toto.io/attestation/test-result/v0.1":
        raise ValueError(f"predicate type {pb.predicate_type}")
    result = json_format.ParseDict(statement["predicate"], test_result_pb2.TestResult())
    if result.result not in ("PASSED", "WARNED", "FAILED"):
        raise ValueError(f"result {result.result!r}")
    if not result.configuration:
        raise ValueError("the predicate names no configuration")
    for rd in result.configuration:
        ResourceDescriptor.copy_from_pb(rd).validate()
    listed = list(result.passed_tests) + list(result.warned_tests) + list(result.failed_tests)
    if len(listed) != len(set(listed)) or not listed:
        raise ValueError(f"each check must be listed once: {listed}")


if __name__ == "__main__":
    sys.exit(main())
