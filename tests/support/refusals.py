"""One check for every refusal the tests expect: the answer is a clear error.

A refused call must say what is wrong in one JSON object {"error": code, "message":
text} and exit non-zero, and it must not be autotune's own failure: never the code
"internal" and never exit 70 (EX_SOFTWARE, what an unexpected exception exits with).
The test files' `refused(...)` helpers all end here, so a refusal that is really a
crash cannot pass as the refusal a test expected."""

INTERNAL_EXIT = 70


def clear_error(result, code=None, *needles):
    """Asserts that a CLI result (conftest.CLIResult) is a clear refusal, with error
    `code` when given and each of `needles` in its message; returns the message."""
    assert result.rc != 0, "expected a refusal, the call succeeded: %r" % (result,)
    assert result.rc != INTERNAL_EXIT, "exit 70 is an internal error, not a refusal: %r" % (result,)
    assert isinstance(result.json, dict), "a refusal answers one JSON object: %r" % (result,)
    assert "error" in result.json and "message" in result.json, result
    error, message = result.json["error"], result.json["message"]
    assert isinstance(error, str) and error and error != "internal", result
    assert isinstance(message, str) and message.strip(), result
    assert "Traceback" not in result.out + result.err, result
    if code is not None:
        assert error == code, (code, result)
    for needle in needles:
        assert needle in message, (needle, message)
    return message
