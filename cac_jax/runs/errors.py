"""How a failed command ends: one line that names what is wrong and what to do, and an exit code.

Errors a user can act on (a bad value, a missing or damaged file, a full disk, a busy work directory, a job whose
processes disagree) carry the whole story in their message. Anything else is a bug: one line says so, and
``--debug`` shows its traceback. Imports nothing heavy (the command's ``--help`` stays fast).
"""

from __future__ import annotations

from cac_jax import storage
from cac_jax.runtime import distributed
from cac_jax.runtime.interrupts import Terminated


class WorkdirError(RuntimeError):
    """The work directory holds another run, or already the finished results of this one."""


# Errors whose message is the whole story.
USER_ERRORS = (ValueError, FileNotFoundError, storage.StorageError, storage.WorkdirBusy, distributed.JobError,
               WorkdirError)


def _user_error(error: BaseException) -> bool:
    if isinstance(error, USER_ERRORS):
        return True
    # Defined beside the code that raises them, which imports JAX: recognised by name.
    return type(error).__name__ in ("TrainingDiverged", "TrialsFailed")


def failure_message(error: BaseException, *, resumes: bool = False) -> tuple[str, int]:
    """(the one line that ends a command failed by ``error``, its exit code). ``resumes``: the command picks up
    where it stopped when run again (train, sweep)."""
    if isinstance(error, (KeyboardInterrupt, Terminated)):
        what, code = ("interrupted", 130) if isinstance(error, KeyboardInterrupt) else ("terminated (SIGTERM)", 143)
        after = "the same command resumes from the last checkpoint" if resumes else "run the same command again"
        return f"{what}; {after}", code
    if isinstance(error, SystemExit):
        return f"exited with code {error.code}", error.code if isinstance(error.code, int) else 1
    if _user_error(error):
        text = str(error)
    elif isinstance(error, OSError):
        text = storage.describe_os_error(error, verb="use")
    else:
        first = str(error).strip().splitlines()[0][:500] if str(error).strip() else ""
        text = (f"unexpected {type(error).__name__}{': ' + first if first else ''} (run again with --debug for the "
                f"traceback, and please report it)")
    return " ".join(text.split()), 1
