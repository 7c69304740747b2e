"""`Configurable`: the base of the small objects a pruned model saves
(schedules, criteria, dynamic sparse training methods)."""


class Configurable:
    """An object fully described by `get_config()` (its constructor
    arguments): rebuilt by `from_config`, equal to another of its class
    with the same config, shown as a constructor call."""

    def get_config(self):
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __eq__(self, other):
        return type(self) is type(other) and (
            self.get_config() == other.get_config()
        )

    def __hash__(self):
        return hash((type(self), tuple(sorted(self.get_config().items()))))

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"
