"""Built-in training stages; importing this package registers them (see `Stage`).

| name | trains | status |
|---|---|---|
| `toy` | a small MLP on synthetic data (infrastructure smoke stage) | done |
| `vae`, `teacher`, `ode`, `student`/`dmd`, `mag`, `retrieval` | the paper stages | to come |
"""

from reverie.training.stages import toy

__all__ = ["toy"]
