"""Exceptions raised by nasrt for bad input (never a crash, never a hang).

Every reader of a file nasrt accepts raises one of these, with a one-line
message naming the file and the field; all are ValueErrors, so the CLI (and
existing callers catching ValueError) report them in one line."""


# Characters str.splitlines() breaks at (and other controls), shown escaped: a message stays
# one line whatever a hostile file puts into the field names or values it quotes.
_ESCAPES = {c: repr(chr(c))[1:-1] for c in (*range(0x20), 0x7f, 0x85, 0x2028, 0x2029)}


class NasrtError(ValueError):
    """Base of the errors nasrt raises for input it cannot accept."""

    def __init__(self, *args):
        if len(args) == 1 and isinstance(args[0], str):
            args = (args[0].translate(_ESCAPES),)
        super().__init__(*args)


class ModelError(NasrtError):
    """A model file, plan or input that nasrt cannot accept; the message names
    the file and the field (or the expected shape)."""


class PlanError(ModelError):
    """A plan that breaks plan-v1; the message names the field, e.g.
    ``paths[1][2].kernel: must be an odd integer >= 1``."""


class DataError(NasrtError):
    """A dataset directory or file nasrt cannot read; the message names the file
    (and the member or field) and what is expected."""


class SpaceError(NasrtError):
    """A search space (space.json or the CLI's space flags) that nasrt cannot accept;
    the message names the file and the field."""


class LutError(ModelError):
    """A latency table (lut.json) that nasrt cannot accept; the message names the file
    and the field. A ModelError, as the table's errors were before it had its own type."""
