"""Validates an OSCAL assessment-results document with compliance-trestle (the OSCAL models of
the OSCAL ecosystem's Python tooling) and prints what it read back, as JSON:
{"oscal_version": …, "observations": N, "findings": {target-id: state}}.

Usage: validate_oscal.py FILE    Exit 0 when valid, 1 (with the validation error) otherwise."""

import json
import pathlib
import sys

from trestle.oscal.assessment_results import AssessmentResults


def plain(value):
    """The text of a trestle value: an enum's value, a pydantic root model's root."""
    while hasattr(value, "root"):
        value = value.root
    return getattr(value, "value", value)


def main() -> int:
    path = pathlib.Path(sys.argv[1])
    try:
        ar = AssessmentResults.oscal_read(path)
    except Exception as e:  # pydantic's ValidationError, with every field that failed
        print(f"invalid: {e}")
        return 1
    if ar is None:
        print("invalid: not an assessment-results document")
        return 1
    result = ar.results[0]
    findings = {f.target.target_id: plain(f.target.status.state) for f in result.findings or []}
    print(json.dumps({
        "oscal_version": plain(ar.metadata.oscal_version),
        "observations": len(result.observations or []),
        "findings": findings,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
