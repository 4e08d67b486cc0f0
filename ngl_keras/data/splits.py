"""Split specs: tfds's grammar for one split (`tfds.core.ReadInstruction.from_spec`), parsed here so
that a config is checked, and in-memory arrays are sliced, exactly as tfds reads it."""

import re
from dataclasses import dataclass

from ngl_keras.settings import shown

_SPLIT_SPEC = re.compile(r"^(?P<base>[\w-]+)(?:\[(?P<start>[\d\w%.-]*):(?P<stop>[\d\w%.-]*)\])?$")
_BOUND = re.compile(r"^(?P<value>-?[\d_.]+)(?P<unit>%)?$")
SPLIT_FORMS = "a split such as 'train', 'train[:90%]', 'train[-10%:]' or 'test[1000:]'"


@dataclass(frozen=True)
class Split:
    """A split spec: base split, and bounds in examples (int) or percent (float), None: the end."""

    base: str
    start: object = None
    stop: object = None
    percent: bool = False

    @classmethod
    def parse(cls, spec):
        """The `Split` of `spec`, or ValueError (one line) when tfds would not read it as one split
        slice: 'train[:100.5]' (a fraction of an example), 'a+b', 'train[5]'. Bounds outside the
        split ('train[:101%]') are found by `rows`, which knows its size."""
        match = _SPLIT_SPEC.match(spec) if isinstance(spec, str) else None
        bounds = [match.group(k) or None for k in ("start", "stop")] if match else []
        parsed = [_BOUND.match(b) if b else None for b in bounds]
        if not match or any(b and not p for b, p in zip(bounds, parsed)) or (
                "[" in spec and not any(bounds)):
            raise ValueError(f"split {shown(spec)} is not {SPLIT_FORMS}.")
        percent = any(p is not None and p.group("unit") for p in parsed)  # tfds: one unit for both
        values = []
        for p in parsed:
            try:
                values.append(None if p is None else float(p.group("value")) if percent else int(p.group("value")))
            except ValueError:
                raise ValueError(f"split {shown(spec)} is not {SPLIT_FORMS}: a bound without % counts whole "
                                 "examples.") from None
        return cls(match.group("base"), *values, percent)

    def rows(self, count):
        """(first row, end row) of this split over `count` examples, as tfds computes them
        (percentages rounded to the closest row, negative bounds from the end); None when the
        bounds lie outside the `count` examples."""
        def row(value, default):
            if value is None:
                return default
            return int(round(value * count / 100.0)) if self.percent else value

        start, stop = row(self.start, 0), row(self.stop, count)
        if abs(start) > count or abs(stop) > count:
            return None
        return start + count if start < 0 else start, stop + count if stop < 0 else stop

