"""User-facing errors: one line that says what is wrong and how to fix it."""


class LmadaptError(Exception):
    """An error the user caused and can fix; the CLI prints it as one line, without a traceback."""


class ResumeRefused(LmadaptError):
    """resume=true under other settings than the checkpoints or finished runs were made with;
    a compare stops on it instead of skipping the method."""
