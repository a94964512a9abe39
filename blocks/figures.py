"""Writing a matplotlib figure where the user asked, under the name it is written to."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import ValidationError


def save_figure(fig: Any, path: str | Path, **options: Any) -> Path:
    """Write ``fig`` to ``path`` and return the file's path: a name without a suffix gets
    ``.png`` (matplotlib's default format, which it adds to the file but not to the name the
    caller keeps), a suffix matplotlib cannot write is refused naming the ones it can, and the
    parent folder is made."""
    path = Path(path)
    if path.is_dir():  # (DIR.png was written beside it, silently)
        raise ValidationError(f"Cannot write a figure to {str(path)!r}: it is a directory; give "
                              f"a file name in it, e.g. {str(path / 'figure.png')!r}.")
    if not path.suffix:
        path = path.with_suffix(".png")
    kinds = fig.canvas.get_supported_filetypes()
    if path.suffix[1:].lower() not in kinds:
        raise ValidationError(f"Cannot write a figure as {path.suffix!r} ({path}); use one of "
                              f"{', '.join('.' + k for k in sorted(kinds))} (e.g. .png).")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, **options)
    return path


__all__ = ["save_figure"]
