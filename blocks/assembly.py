"""A recipe's sections: merging the explicit ``globals`` / ``models`` / ``phases`` /
``evaluation`` into the defaults its shortcuts give, detecting conflicts, and building the
blocks of the expanded routine through the registry (every name a plugin can replace).

Merge rules (the same for every recipe):

- ``globals``, ``models``, ``evaluation`` are tables keyed by name; ``phases`` is a list keyed
  by each phase's ``name`` (a new name adds a phase where the list puts it: after the phase
  listed before it, else before the recipe's phase listed after it, else at the end);
- inside an entry, a table updates the default key by key when it names the same block (or no
  block: ``relation = {n_neighbors = 10}`` tunes the default relation), and the default
  block's name alone keeps it as it is; a different ``name`` replaces the default block whole,
  except that the values a shortcut the user set gave the default block reach the new block
  where it has the field and leaves it out (``seed`` a validation sampler of one's own,
  ``n_neighbors`` a k-NN relation of one's own); lists (``transforms``) and scalars replace
  (a replaced list's entry that names a default entry's block is merged onto that entry, its
  own keys winning: :func:`_merged_list`);
- a block with a ``losses`` list (``compound``) in place of a default block: each part (nested
  parts too) that names the default block is merged onto the default's whole spec by the rule
  above (the part's own keys win), so wrapping the recipe's loss to add a term keeps it.

Lists of blocks are never in conflict: an explicit ``transforms = [...]`` replaces the default
list even when a shortcut (``seed``) shaped it.  A key that a shortcut's default would not
create at all (a phase that exists only with ``layout_epochs > 0``) is no conflict either.

A conflict: an explicit key that differs from its default *because of* a shortcut the user set
away from its default (``n_neighbors = 30`` with ``globals.graph.relation.n_neighbors = 10``) —
both keys are named in the error.
"""

from __future__ import annotations

import copy
import warnings
import weakref
from typing import TYPE_CHECKING, Any

import attrs

from .errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from .recipe import Recipe

#: the section fields of every recipe, in their TOML order
SECTIONS: tuple[str, ...] = ("globals", "models", "phases", "evaluation")
#: keys of a ``globals`` entry
GLOBAL_KEYS = ("input", "relation", "transforms")


def section_field() -> Any:
    """An optional section of a recipe (None: the defaults)."""
    return attrs.field(default=None, kw_only=True, metadata={"section": True})


# ---------------------------------------------------------------------------- merging


def _block_name(spec: Any) -> Any:
    if isinstance(spec, str):
        return spec
    return spec.get("name") if isinstance(spec, dict) else None


def merge_entry(default: Any, override: Any) -> Any:
    """``default`` updated by ``override`` (see the module docstring)."""
    if _holds_parts(override) and isinstance(_block_name(default), str) and \
            "name" in override and _block_name(override) != _block_name(default):
        # (a table with parts and no name tunes the default block: a full form's edit of a
        # compound's parts is {losses = [...]}, author25-8)
        return _merged_parts(default, override)
    if isinstance(default, str) and isinstance(override, dict) and "name" not in override:
        default = {"name": default}  # tune the default block: {n_neighbors = 10}
    if isinstance(default, dict) and isinstance(override, str) and \
            override == default.get("name"):
        return copy.deepcopy(default)  # the default block named again: kept as it is
    if isinstance(default, dict) and isinstance(override, dict) and \
            override.get("name", default.get("name")) == default.get("name"):
        out = copy.deepcopy(default)
        for key, value in override.items():
            out[key] = merge_entry(out[key], value) if key in out else copy.deepcopy(value)
        return out
    if isinstance(default, list) and isinstance(override, list):
        return _merged_list(default, override)
    return copy.deepcopy(override)


def _merged_list(default: list[Any], override: list[Any]) -> list[Any]:
    """A list of blocks (``transforms``) in place of the default list: an entry that names a
    default entry's block (the k-th of that name, the k-th) keeps what the recipe gave that
    entry, its own keys winning, as a block named in a table does; other entries as written.
    (author28-3: a bare ``"symmetrize"`` in t-SNE's P list built UMAP's fuzzy union,
    ``subtract_product = true``, not the recipe's (P + Pᵀ)/2.)"""
    seen: dict[Any, int] = {}
    out = []
    for entry in override:
        name = _block_name(entry)
        same = [d for d in default if isinstance(d, dict) and _block_name(d) == name] \
            if isinstance(name, str) else []
        if not any(set(d) - {"name"} for d in same):  # (nothing the recipe set: as written)
            out.append(copy.deepcopy(entry))
            continue
        k = seen[name] = seen.get(name, -1) + 1
        out.append(merge_entry(same[k], entry) if k < len(same) else copy.deepcopy(entry))
    return out


def _holds_parts(spec: Any) -> bool:
    """Whether ``spec`` is a block table with a ``losses`` list (``compound``)."""
    return isinstance(spec, dict) and isinstance(spec.get("losses"), list)


def _merged_parts(default: Any, override: dict[str, Any]) -> dict[str, Any]:
    """``override`` (a block with a ``losses`` list, in place of the ``default`` block) with
    each part that names the default block merged onto the default's spec — the part's own
    keys win — and so on inside nested parts: wrapping the built-in loss in a ``compound``
    keeps what the recipe gave it (author22-0: UMAP's main ``relation`` lost its kernel,
    repulsion and anchor, t-SNE's ``kl`` its exaggeration, silently)."""
    out = copy.deepcopy(override)
    name = _block_name(default)
    out["losses"] = [merge_entry(default, part) if _block_name(part) == name
                     else _merged_parts(default, part) if _holds_parts(part) else part
                     for part in out["losses"]]
    return out


def _parts_named(spec: Any, name: Any) -> list[Any]:
    """The parts of a block with a ``losses`` list (nested ones too) named ``name``."""
    if not _holds_parts(spec):
        return []
    return [found for part in spec["losses"] for found in
            ([part] if _block_name(part) == name else _parts_named(part, name))]


def _phase_list(defaults: list[dict[str, Any]], overrides: list[Any] | None, path: str,
                anchors: bool = False) -> list[dict[str, Any]]:
    specs = copy.deepcopy(defaults)
    by_name = {s["name"]: k for k, s in enumerate(specs)}
    if isinstance(overrides, dict):
        raise ConfigError(f"{path}.phases is one table, but it is a list of tables: write "
                          "[[phases]] (double brackets) before each entry in TOML, or "
                          "phases = [{...}] in Python.")
    for k, override in enumerate(overrides or []):
        if not isinstance(override, dict) or "name" not in override:
            raise ConfigError(f"{path}.phases[{k}] must be a table with a 'name' key (one of "
                              f"{list(by_name)} or a new phase), got {override!r}.")
        if override["name"] in by_name:
            index = by_name[override["name"]]
            default = specs[index]
            if "optimizer" in override and \
                    str(override["optimizer"]).lower() != str(default.get("optimizer")).lower():
                # ``optimizer`` names the phase's optimizer (its block), ``optimizer_options``
                # are that block's fields: another optimizer does not inherit the default's
                default = {k: v for k, v in default.items() if k != "optimizer_options"}
            specs[index] = merge_entry(default, override)
        else:
            missing = [key for key in ("epochs", "sampler", "loss") if key not in override]
            import difflib

            close = difflib.get_close_matches(str(override["name"]), list(by_name), n=1,
                                              cutoff=0.6)
            if anchors and set(override) == {"name"}:  # (an edit's neighbour of a new phase:
                pass  # a recipe phase that the explicit sections need not list)
            elif missing and close:  # a misspelt default phase, not a new one
                raise ConfigError(
                    f"{path}.phases: no phase {override['name']!r} (the phases are "
                    f"{list(by_name)}); did you mean {close[0]!r}? A new phase needs a full "
                    f"spec ({', '.join(missing)} missing).")
            by_name[override["name"]] = len(specs)
            specs.append(copy.deepcopy(override))
    return _in_listed_order(specs, [o["name"] for o in overrides or []], len(defaults))


def _in_listed_order(specs: list[dict[str, Any]], listed: list[Any], n_defaults: int
                     ) -> list[dict[str, Any]]:
    """``specs`` (the default phases, then the new ones) with each new phase placed where
    ``listed`` (the ``[[phases]]`` names, in order) puts it: after the phase listed just
    before it, else before the first default phase listed after it, else at the end.  The
    default phases keep the recipe's order (author28-6: an exaggerated layout phase listed
    before t-SNE's `init` ran after `main`, and `init` regressed the network onto the
    exaggerated map: digits network trust@15 0.916 instead of 0.960)."""
    new = {s["name"]: s for s in specs[n_defaults:]}
    if not new:
        return specs
    order = [s["name"] for s in specs[:n_defaults]]
    pending: list[Any] = []  # new phases listed before any placed phase
    last = None
    for name in dict.fromkeys(listed):
        if name in new:
            if last is None:
                pending.append(name)
            else:
                order.insert(order.index(last) + 1, name)
                last = name
        else:
            if pending:
                at = order.index(name)
                order[at:at] = pending
                pending = []
            last = name
    order += pending
    by_name = {s["name"]: s for s in specs}
    return [by_name[name] for name in order]


def merge_sections(defaults: dict[str, Any], explicit: dict[str, Any], path: str
                   ) -> dict[str, Any]:
    out = {}
    for key in SECTIONS:
        default, given = defaults.get(key), explicit.get(key)
        if key == "phases":
            out[key] = _phase_list(default or [], given, path)
            continue
        if given is not None and not isinstance(given, dict):
            raise ConfigError(f"{path}.{key} must be a table of name -> block, got {given!r}.")
        merged = copy.deepcopy(default or {})
        for name, value in (given or {}).items():
            if key == "globals" and not isinstance(value, dict):  # (recipes read it as one)
                raise ConfigError(f"{path}.globals.{name} must be a table with keys "
                                  f"{list(GLOBAL_KEYS)}, got {value!r}.")
            merged[name] = merge_entry(merged[name], value) if name in merged \
                else copy.deepcopy(value)
        out[key] = merged
    return out


def section_edits(written: dict[str, Any], dumped: dict[str, Any]) -> dict[str, Any]:
    """The edits that turn the expanded sections ``dumped`` (what ``to_dict(full=True)``
    wrote) into ``written`` (the file as it is now), as explicit sections: the keys whose
    value differs, nested by entry (a block named otherwise, or a list, whole; a phase that
    was not written, whole).  A key removed from the file is no edit."""
    out: dict[str, Any] = {}
    for key in SECTIONS:
        mine, then = written.get(key), dumped.get(key)
        if mine is None:
            out[key] = None
        elif key == "phases":
            by_name = {p.get("name"): p for p in then or [] if isinstance(p, dict)}
            phases = []
            for k, phase in enumerate(mine):
                name = phase.get("name") if isinstance(phase, dict) else None
                if name not in by_name:
                    # a phase of the file's own, after (else before) its neighbour in the
                    # file, named too: it runs where the file lists it (_in_listed_order)
                    near = [p.get("name") for p in (mine[k - 1:k] or mine[k + 1:k + 2])
                            if isinstance(p, dict) and p.get("name") in by_name]
                    if k == 0 and near:
                        phases += [copy.deepcopy(phase), {"name": near[0]}]
                        continue
                    if near and not any(p.get("name") == near[0] for p in phases):
                        phases.append({"name": near[0]})
                    phases.append(copy.deepcopy(phase))
                elif edits := _edits(phase, by_name[name]):
                    phases.append({"name": name, **edits})
            out[key] = phases or None
        else:
            out[key] = _edits(mine, then or {}) or None
    return out


def _edits(mine: dict[str, Any], then: Any) -> dict[str, Any]:
    """:func:`section_edits` for one table: its keys that differ from ``then``'s."""
    out = {}
    for key, value in mine.items():
        old = then.get(key, _MISSING) if isinstance(then, dict) else _MISSING
        if _same_parts(value, old):
            # a compound's parts, part for part the blocks written: a key a part lacks keeps
            # what was written (author25-8: removed, or a field a newer plugin release added)
            value = _with_written_keys(value, old)
        if old is not _MISSING and _same(value, old):
            continue
        if isinstance(value, str) and isinstance(old, dict) and value == old.get("name"):
            # the block named alone where its table was written (a full form written before
            # the table listed the block's defaults): as merge_entry reads it, no change
            continue
        if isinstance(value, dict) and isinstance(old, dict) and \
                value.get("name", old.get("name")) == old.get("name"):
            if inner := _edits(value, old):
                out[key] = inner  # the same block, tuned
        elif isinstance(value, dict) and isinstance(old, dict):
            # a block renamed in the file: the keys written for the old block, unchanged,
            # that the new one lacks go, as in a short config (author20 F8: `mlp` -> `tanh_mlp`
            # in a `config --full` file was refused for `hidden_dims`, "did you mean in_dim")
            fields = _block_attributes(value.get("name"))
            out[key] = {k: copy.deepcopy(v) for k, v in value.items() if fields is None
                        or k == "name" or k in fields or k not in old or not _same(v, old[k])}
        else:
            out[key] = copy.deepcopy(value)
    return out


def _same_parts(value: Any, old: Any) -> bool:
    """Whether ``value`` and ``old`` are lists of the same blocks, part for part (a
    compound's ``losses`` as the file has it and as it was written)."""
    return isinstance(value, list) and isinstance(old, list) and len(value) == len(old) \
        and any(isinstance(v, dict) for v in value) \
        and all(_block_name(v) == _block_name(o) is not None for v, o in zip(value, old))


def _with_written_keys(value: Any, old: Any) -> Any:
    """``value`` with the keys it lacks taken from ``old``, the same block as written, table
    by table and part by part (nested compounds too)."""
    if isinstance(value, dict) and isinstance(old, dict) and \
            value.get("name", old.get("name")) == old.get("name"):
        return {**copy.deepcopy(old), **{k: _with_written_keys(v, old.get(k, _MISSING))
                                         for k, v in value.items()}}
    if _same_parts(value, old):
        return [_with_written_keys(v, o) for v, o in zip(value, old)]
    return copy.deepcopy(value)


def apply_edits(sections: dict[str, Any], edits: dict[str, Any], path: str) -> dict[str, Any]:
    """Explicit ``sections`` updated by explicit ``edits`` (:func:`section_edits`), entry by
    entry with the merge rules; None where both are empty."""
    out: dict[str, Any] = {}
    for key in SECTIONS:
        base, given = sections.get(key), edits.get(key)
        if given is None:
            out[key] = copy.deepcopy(base)
        elif key == "phases":
            out[key] = _phase_list(list(base or []), given, path, anchors=True)
        else:
            merged = copy.deepcopy(base or {})
            for name, value in given.items():
                merged[name] = merge_entry(merged[name], value) if name in merged \
                    else copy.deepcopy(value)
            out[key] = merged
    return out


# ---------------------------------------------------------------------------- conflicts


def _leaves(value: Any, prefix: tuple[Any, ...]) -> list[tuple[tuple[Any, ...], Any]]:
    from .base import Block

    if isinstance(value, Block):  # an instance: its fields, compared key by key as a table's
        value = value.describe()  # (author20 F9: one equal to the shortcut conflicted)
    if isinstance(value, dict):
        return [leaf for k, v in value.items() for leaf in _leaves(v, (*prefix, k))]
    if isinstance(value, list) and any(isinstance(v, (dict, str)) for v in value):
        return []  # a list of blocks (transforms) replaces the default list: the explicit wins
    return [(prefix, value)]


def _explicit_leaves(explicit: dict[str, Any]) -> list[tuple[tuple[Any, ...], Any]]:
    leaves = []
    for key in SECTIONS:
        given = explicit.get(key)
        if not given:
            continue
        if key == "phases":
            for phase in given:
                if isinstance(phase, dict):
                    rest = {k: v for k, v in phase.items() if k != "name"}
                    leaves += _leaves(rest, ("phases", phase.get("name")))
        else:
            leaves += _leaves(given, (key,))
    return leaves


_MISSING = object()


def _at(sections: dict[str, Any], path: tuple[Any, ...]) -> Any:
    value: Any = sections
    for k, part in enumerate(path):
        if k == 1 and path[0] == "phases":
            value = next((p for p in value if p.get("name") == part), _MISSING)
        elif isinstance(value, str) and part != "name":
            return _MISSING  # a block named by a string: its keys are the block's defaults
        elif isinstance(value, dict):
            value = value.get(part, _MISSING)
        else:
            return _MISSING
        if value is _MISSING:
            return value
    return value


def _dotted(path: tuple[Any, ...]) -> str:
    return ".".join(map(str, path))


def _field_default(field: attrs.Attribute) -> Any:
    default = field.default
    if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
        return default.factory(None) if default.takes_self else default.factory()
    return default


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - arrays and the like
        return a is b


def shortcut_fields(cls: type) -> list[attrs.Attribute]:
    """The recipe's hyperparameters: init fields that are neither sections nor transient."""
    return [f for f in attrs.fields(cls) if f.init and f.name not in SECTIONS
            and not f.metadata.get("transient")]


def _moved(value: Any) -> Any:
    """Another value of a shortcut's type, to see which keys it fills (_MISSING: none)."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value * 1.25 if value else 0.125  # (0.0: UMAP's min_dist)
    if isinstance(value, str):
        return value + "\u2032"  # a name no block has: it only marks where the value goes
    if isinstance(value, (list, tuple)) and value and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        return type(value)([*value, value[-1]])  # one entry more (hidden sizes)
    return _MISSING


def _nearby_sections(recipe: Recipe, field: attrs.Attribute) -> dict[str, Any] | bool:
    """The default sections with a shortcut moved a little — a number, a flag, a name, a list
    of sizes — (False where it cannot be): which keys of an entry the shortcut itself fills.
    Validators are off for the moved value (another name is no registered block)."""
    moved = _moved(getattr(recipe, field.name))
    if moved is _MISSING:
        return False
    try:
        with attrs.validators.disabled():
            return attrs.evolve(recipe, **{field.name: moved}).default_sections()
    except Exception:  # noqa: BLE001
        return False


def expand_sections(recipe: Recipe) -> dict[str, Any]:
    """The recipe's expanded sections; :class:`ConfigError` on a shortcut/section conflict.

    A block the sections name in place of a default receives what the shortcuts give the
    default block, where it has the field and its table leaves it out: a shortcut the user set
    (:func:`_carry`), and one at its default — a number, a flag, a name, a list of sizes —
    where the field's type and validator take the value (:func:`_fits`); a list of
    blocks (``transforms``) what a shortcut the user set gave its entries of the same name
    (:func:`_carry_list`).  A set shortcut whose every value is lost that way is a
    :class:`ShortcutWarning`; so is one that reaches some block but not another it gave its
    own value (under its own name: `dof`, `perplexity`, not the `exaggeration_epochs` derived
    from `layout_epochs`)."""
    return _expand(recipe, warn=True)[0]


def unreached_shortcuts(recipe: Recipe) -> list[str]:
    """The names of the shortcuts set on ``recipe`` whose value reaches no block of its
    sections — those :func:`expand_sections` warns about — without warning."""
    return _expand(recipe, warn=False)[1]


def _expand(recipe: Recipe, warn: bool) -> tuple[dict[str, Any], list[str]]:
    path = recipe.name or type(recipe).__name__
    unreached: list[str] = []
    explicit = {k: getattr(recipe, k) for k in SECTIONS}
    defaults = recipe.default_sections()
    merged = merge_sections(defaults, explicit, path)
    _chosen_away(recipe, path, warn, unreached)
    if not any(explicit.values()):
        return merged, unreached
    changed = [(p, v) for p, v in _explicit_leaves(explicit)
               if (old := _at(defaults, p)) is not _MISSING and not _same(old, v)]
    lists = [p for p, v in _explicit_lists(explicit)
             if isinstance(old := _at(defaults, p), list) and not _same(old, v)]
    if not changed and not lists:
        return merged, unreached
    # default blocks replaced by a name (`sampler = "mine"`, `{name = "mine", ...}`): their
    # leaf in ``changed`` -> the path of the block
    replaced = {}
    for leaf, value in changed:
        block = leaf[:-1] if leaf[-1] == "name" else leaf
        current = _at(defaults, block)
        if isinstance(current, dict) and isinstance(current.get("name"), str) and \
                isinstance(value, str):
            replaced[leaf] = block
    # the shortcuts' effects are measured against the same recipe rebuilt from its arguments:
    # a default that depends on fit state (MI's evaluation index under fit(sampler=fn)) is
    # not a shortcut's
    rebuilt = attrs.evolve(recipe).default_sections()
    for field in shortcut_fields(type(recipe)):
        if field.default is attrs.NOTHING:
            continue
        default = _field_default(field)
        if _same(getattr(recipe, field.name), default):
            continue
        try:
            alternative = attrs.evolve(recipe, **{field.name: default}).default_sections()
        except Exception:  # noqa: BLE001 - e.g. cross-field validation: not comparable
            continue
        nearby = None  # the sections with the shortcut moved a little, where it creates keys
        for leaf, value in changed:
            other, current = _at(alternative, leaf), _at(rebuilt, leaf)
            if other is _MISSING:  # the shortcut creates this entry (layout_epochs > 0)
                if nearby is None:
                    nearby = _nearby_sections(recipe, field)
                other = _at(nearby, leaf) if nearby else _MISSING
            if leaf in replaced and other is not _MISSING:  # another block: the shortcut
                other, current = _block_name(other), _block_name(current)  # conflicts by name
            if other is not _MISSING and not _same(other, current):
                raise ConfigError(
                    f"{path}: `{field.name}` = {getattr(recipe, field.name)!r} and "
                    f"`{_dotted(leaf)}` = {value!r} both set this value. Remove one of them "
                    f"(the shortcut `{field.name}` fills `{_dotted(leaf)}` = "
                    f"{_at(defaults, leaf)!r}).")
        lost = []
        for block in set(replaced.values()):
            lost += _carry(merged, block, _at(rebuilt, block), _at(alternative, block),
                           shortcut=(field.name, getattr(recipe, field.name)))
        for where in lists:
            lost += _carry_list(merged, where, _at(rebuilt, where), _at(alternative, where))
        if not lost:
            continue
        value = getattr(recipe, field.name)
        reached = _reached(merged, rebuilt, alternative)
        if not reached:
            unreached.append(field.name)
            if warn:
                warn_once(recipe, ShortcutWarning(
                    f"{path}: `{field.name}` = {value!r} reaches no block: "
                    + "; ".join(dict.fromkeys(m for *_, m in lost)) + ". Set the value in the "
                    f"block's own table, or remove `{field.name}`."),
                    stacklevel=3)  # attributed to Recipe.routine_spec
            continue
        # a shortcut that still fills one block is as lost for a block it gave its own value
        # to, under its own name (author23-1: t-SNE's `perplexity` set k = 30 while a plugin
        # affinity kept its own perplexity 30; `dof` reached only the main phase, which runs 0
        # epochs) — not for a value only derived from it (`layout_epochs` caps the built-in
        # KL's `exaggeration_epochs`; a plugin loss has none, author23-9)
        own = list(dict.fromkeys(m for keys, where, m in lost if field.name in keys and not any(
            r == where or r.startswith(f"{where}.") for r in reached)))  # (a compound's part)
        if own and warn:
            blocks = ", ".join(f"`{r}`" for r in reached)
            warn_once(recipe, ShortcutWarning(
                f"{path}: `{field.name}` = {value!r} reaches {blocks} but not every block it "
                f"fills: " + "; ".join(own) + ". Give that block its own setting in its table; "
                f"to use the value only where it goes, set it in the table of {blocks} "
                f"instead of `{field.name}`."), stacklevel=3)
    # a shortcut left at its default reaches a block named in place of the default too (a
    # batch size, a start scale, a metric, an activation, hidden sizes): a drop-in
    # replacement runs with the recipe's settings, as the built-in block would (UMAP's
    # `transform` queries neighbours with the recipe's metric, so a k-NN relation of one's
    # own must build the graph with it); its own table still wins
    blocks = set(replaced.values())
    for field in shortcut_fields(type(recipe)) if blocks else ():
        if field.default is attrs.NOTHING or \
                not _same(getattr(recipe, field.name), _field_default(field)):
            continue  # a required setting, or one the user set (carried above)
        nearby = _nearby_sections(recipe, field)
        if not nearby:
            continue
        for block in blocks:
            parent = _at(merged, block[:-1])
            tuned = _tuned(_at(rebuilt, block), _at(nearby, block))
            if tuned and isinstance(parent, dict) and block[-1] in parent:
                parent[block[-1]], _ = _filled(parent[block[-1]], tuned, _dotted(block),
                                               only_fitting=True)
    # a value the fit itself sets in a default list's entry (t-SNE's `perplexity_`, lowered on
    # a small data set) reaches the replaced list's entry, where its table leaves it out:
    # `transforms = ["perplexity_rescale", ...]` ran at the block's 30 while the fit's warning
    # said 19.67, and `perplexity_` was None
    for where in lists:
        _carry_list(merged, where, _at(defaults, where), _at(rebuilt, where), only_fitting=True)
    return merged, unreached


def _chosen_away(recipe: Recipe, path: str, warn: bool, unreached: list[str]) -> None:
    """A set shortcut that fills a key of a default block which another set shortcut — one
    that names the block itself (MI's `negatives`) — replaced by a block without that key
    reaches no block either (author11 A11-6: `marginal_factor` = 2.0 with `negatives` =
    "all_pairs" was dropped silently): a :class:`ShortcutWarning` naming both.  Only a
    shortcut that changes nothing in the default sections is looked at, and only when it
    would with the other shortcut at its default (settings that never fill a section — a
    device, a thread count — are not warned about)."""
    fields = [f for f in shortcut_fields(type(recipe)) if f.default is not attrs.NOTHING
              and not _same(getattr(recipe, f.name), _field_default(f))]
    if len(fields) < 2:
        return
    try:
        base = attrs.evolve(recipe).default_sections()
    except Exception:  # noqa: BLE001 - not comparable
        return
    for field in fields:
        value = getattr(recipe, field.name)
        try:
            if not _same(attrs.evolve(recipe, **{field.name: _field_default(field)})
                         .default_sections(), base):
                continue  # it fills something
        except Exception:  # noqa: BLE001 - e.g. cross-field validation: not comparable
            continue
        for other in fields:
            if other is field:
                continue
            try:
                without = attrs.evolve(recipe, **{other.name: _field_default(other)})
                filled_sections = without.default_sections()
                unfilled = attrs.evolve(without, **{field.name: _field_default(field)}
                                        ).default_sections()
            except Exception:  # noqa: BLE001
                continue
            # only where `other` put another block in place (by name): a setting that
            # turns a phase off (test_fraction = 0: no validation) loses its keys knowingly
            filled = [leaf for leaf, v in _explicit_leaves(filled_sections)
                      if not _same(v, _at(unfilled, leaf))
                      and _renamed(_at(filled_sections, leaf[:-1]), _at(base, leaf[:-1]))]
            if not filled:
                continue
            where = [f"`{_dotted(leaf[:-1])}` is now {_block_name(_at(base, leaf[:-1]))!r}, "
                     f"which has no field `{leaf[-1]}`" for leaf in filled]
            unreached.append(field.name)
            if warn:
                warn_once(recipe, ShortcutWarning(
                    f"{path}: `{field.name}` = {value!r} reaches no block: it fills "
                    f"`{_dotted(filled[0])}`, but `{other.name}` = "
                    f"{getattr(recipe, other.name)!r} chose another block: "
                    + "; ".join(dict.fromkeys(where)) + ". Set the value in the block's own "
                    f"table, or remove `{field.name}`."), stacklevel=4)
            break


def _renamed(before: Any, after: Any) -> bool:
    """Whether a block spec (a name or a table with ``name``) became another block."""
    names = [_block_name(v) if isinstance(v, (str, dict)) else None for v in (before, after)]
    return all(isinstance(n, str) for n in names) and names[0] != names[1]


class ShortcutWarning(UserWarning):
    """A shortcut the user set reaches no block: the sections replaced every block it fills
    with blocks that do not have the field."""


# recipe id -> the messages already shown for it; an entry leaves with its recipe
_WARNED: dict[int, set[str]] = {}


def warn_once(recipe: Any, warning: Warning, stacklevel: int = 2) -> None:
    """Issue ``warning`` unless ``recipe`` already gave the same message.

    A recipe expands its sections when it is read (``recipe_from_dict``, ``config``), again at
    ``fit`` and several times inside it; a message about the recipe's settings is shown once
    per recipe instance, whatever the warning filter (author20 F12: the same ShortcutWarning
    at read and at fit, twice within one UMAP fit under ``simplefilter("always")``).  A
    changed setting (``set_params``) is another message, shown again."""
    key, text = id(recipe), str(warning)
    if key not in _WARNED:
        try:
            weakref.finalize(recipe, _WARNED.pop, key, None)
        except TypeError:  # not weak-referenceable: warn every time, as before
            warnings.warn(warning, stacklevel=stacklevel + 1)
            return
        _WARNED[key] = set()
    if text in _WARNED[key]:
        return
    _WARNED[key].add(text)
    warnings.warn(warning, stacklevel=stacklevel + 1)


def _explicit_lists(explicit: dict[str, Any]) -> list[tuple[tuple[Any, ...], Any]]:
    """(path, list) of every list of blocks in the explicit sections (``transforms``)."""
    found: list[tuple[tuple[Any, ...], Any]] = []

    def walk(value: Any, prefix: tuple[Any, ...]) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, (*prefix, k))
        elif isinstance(value, list) and any(isinstance(v, (dict, str)) for v in value):
            found.append((prefix, value))

    for key in SECTIONS:
        given = explicit.get(key)
        if key == "phases":
            for phase in given or []:
                if isinstance(phase, dict):
                    walk({k: v for k, v in phase.items() if k != "name"},
                         ("phases", phase.get("name")))
        elif given:
            walk(given, (key,))
    return found


def _tuned(default: Any, alternative: Any) -> dict[str, Any]:
    """The keys of the default block a shortcut set (where it differs from the block the
    shortcut's default gives)."""
    if isinstance(default, dict) and isinstance(alternative, str):
        alternative = {"name": alternative}  # the same block named alone: no keys set
    if not isinstance(default, dict) or not isinstance(alternative, dict) or \
            default.get("name") != alternative.get("name"):
        return {}  # (a shortcut that names the block chooses it; it fills no field of it)
    return {k: v for k, v in default.items() if k != "name"
            and not _same(v, alternative.get(k, _MISSING))}


def _block_kind(name: Any) -> str | None:
    """The kind of the block registered as ``name`` in exactly one kind (None: unknown)."""
    from .base import BLOCK_KINDS

    registry = _registry()
    kinds = [kind for kind in BLOCK_KINDS if isinstance(name, str) and (kind, name) in registry]
    return kinds[0] if len(kinds) == 1 else None


def _block_attributes(name: Any) -> dict[str, attrs.Attribute] | None:
    """Init fields of the block registered as ``name`` in exactly one kind (None: unknown)."""
    kind = _block_kind(name)
    return None if kind is None else block_fields(kind, name)


def _fits(name: Any, key: str, value: Any) -> bool:
    """Whether ``value`` passes the strict check of field ``key`` of the block ``name`` (a
    field that only shares a shortcut's name may mean something else: a Minkowski `metric`
    number, an `int` of `hidden_dims`)."""
    from .config import _check_value, _field_types

    kind = _block_kind(name)
    if kind is None:
        return True
    cls = _registry().get(kind, name)
    declared = _field_types(cls).get(key, Any)
    try:
        value = _check_value(value, declared)
    except Exception:  # noqa: BLE001 - any refusal of the strict converter
        return False
    field = next((f for f in attrs.fields(cls) if (f.alias or f.name) == key), None) \
        if attrs.has(cls) else None
    if field is not None and field.validator is not None:
        try:  # the field's own validator (a choice of names, a range), after its converter
            if field.converter is not None:  # (a block field builds its block first)
                value = field.converter(value)
            field.validator(None, field, value)
        except AttributeError:
            pass  # a validator that reads the instance: left to the build
        except Exception:  # noqa: BLE001 - the value is refused
            return False
    return True


def _default_block_name(field: attrs.Attribute) -> Any:
    """The name of the block a field holds by default (None: not a block, or no default)."""
    default = field.default
    if isinstance(default, attrs.Factory) and not default.takes_self:
        try:
            default = default.factory()
        except Exception:  # noqa: BLE001 - a factory that needs more: no name to compare
            return None
    if isinstance(default, dict) or isinstance(default, str):
        return _block_name(default)
    return getattr(default, "name", None)


def _takes_table(field: attrs.Attribute, value: Any) -> bool:
    """Whether a recipe's value may go into ``field``: anything but a block's table, which
    goes only into a field that holds that same block by default (UMAP's `min_dist` gives
    its kernel table `{name = "modified_cauchy", a, b}`; a plugin loss's own `kernel =
    "student_t"` is another block, not that kernel's settings — author7 A7-1)."""
    if not (isinstance(value, dict) and isinstance(value.get("name"), str)):
        return True
    return _default_block_name(field) == value["name"]


#: a value a shortcut gave a block that did not reach it: (the keys it went under — with
#: those of a block's table it filled, UMAP's kernel {min_dist, spread} —, the block's dotted
#: path, and why not)
Lost = tuple[frozenset[str], str, str]


def _keys(key: str, value: Any) -> frozenset[str]:
    """``key``, and the keys of a block's table ``value``."""
    return frozenset({key, *(value if isinstance(value, dict) else ())})


def _filled(spec: Any, tuned: dict[str, Any], where: str, only_fitting: bool = False,
            shortcut: tuple[str, Any] | None = None) -> tuple[Any, list[Lost]]:
    """``spec`` with the ``tuned`` keys its block has and leaves out (``only_fitting``: and
    whose declared type takes the value — for a shortcut the user left at its default); what
    of it did not go, a :data:`Lost` per key the block lacks (an empty list also when some
    key went across: the shortcut reached this block).  A value of the ``shortcut`` the user
    set (name, value) that the field's type refuses is a :class:`ConfigError` naming the
    shortcut."""
    fields = _block_attributes(_block_name(spec))
    if fields is None:
        return spec, []
    own = set(getattr(_registry().get(_block_kind(_block_name(spec)), _block_name(spec)),
                      "own_fields", ()))
    fields = {k: f for k, f in fields.items() if k not in own  # the block's own meaning
              and (k not in tuned or _takes_table(f, tuned[k]))}
    params = {"name": spec} if isinstance(spec, str) else dict(spec)
    if shortcut is not None:
        for k, v in tuned.items():
            if k in fields and k not in params and \
                    not _fits(params["name"], k, as_declared(fields[k], v)):
                raise ConfigError(
                    f"`{shortcut[0]}` = {shortcut[1]!r} fills `{where}.{k}` = {v!r}, but "
                    f"`{where}` is now {params['name']!r}, whose field `{k}` does not take "
                    f"it (declared {fields[k].type!s}). Set `{k}` in that block's table, or "
                    f"remove `{shortcut[0]}`.")
    params.update({k: as_declared(fields[k], copy.deepcopy(v)) for k, v in tuned.items()
                   if k in fields and k not in params and (
                       not only_fitting or _fits(params["name"], k, as_declared(fields[k], v)))})
    every = _block_attributes(_block_name(spec)) or {}

    def why(k: str) -> str:
        if k in own:
            return f"which keeps its field `{k}` to its own table (`own_fields`)"
        if k in every:
            return (f"whose `{k}` holds another block by default than the recipe's "
                    f"{_block_name(tuned[k])!r}")
        return f"which has no field `{k}`"

    lost = [(_keys(k, tuned[k]), where, f"`{where}` is now {_block_name(spec)!r}, {why(k)}")
            for k in tuned if k not in fields]
    return (params if len(params) > 1 else spec), ([] if len(lost) < len(tuned) else lost)


def _carry(merged: dict[str, Any], path: tuple[Any, ...], default: Any, alternative: Any,
           shortcut: tuple[str, Any] | None = None) -> list[Lost]:
    """What a set shortcut gave the default block at ``path`` goes to the block that replaced
    it, where that block has the field and its spec leaves it out (``seed`` reaches a
    validation sampler of one's own, ``n_neighbors`` a k-NN relation of one's own); returns
    what could not go (the new block lacks the field)."""
    tuned = _tuned(default, alternative)
    parent = _at(merged, path[:-1])
    if not tuned or not isinstance(parent, dict) or path[-1] not in parent:
        return []
    parent[path[-1]], lost = _filled(parent[path[-1]], tuned, _dotted(path), shortcut=shortcut)
    return lost


def _carry_list(merged: dict[str, Any], path: tuple[Any, ...], default: Any, alternative: Any,
                only_fitting: bool = False) -> list[Lost]:
    """:func:`_carry` for a list of blocks the sections replaced (``transforms``): what a set
    shortcut gave a default entry goes to the new list's first entry of the same name, else,
    in a list of the same length, to the entry in its place, else to the first entry of a
    block the default list does not name that has such a field (a plugin affinity's own
    `perplexity` in place of t-SNE's `perplexity_rescale`, author23-1)."""
    parent = _at(merged, path[:-1])
    if not isinstance(parent, dict) or not isinstance(parent.get(path[-1]), list) or \
            not isinstance(alternative, list) or len(alternative) != len(default):
        return []
    entries, lost = list(parent[path[-1]]), []
    for k, (entry, other) in enumerate(zip(default, alternative)):
        tuned = _tuned(entry, other)
        if not tuned:
            continue
        same = [i for i, e in enumerate(entries) if _block_name(e) == _block_name(entry)]
        if not same and len(entries) == len(default):
            same = [k]  # the entry in its place (a plugin's init in place of pca_init)
        if not same:
            named = {_block_name(e) for e in default}
            same = [i for i, e in enumerate(entries) if _block_name(e) not in named
                    and set(tuned) & set(_block_attributes(_block_name(e)) or ())][:1]
        if not same:
            lost.append((frozenset().union(*(_keys(k, v) for k, v in tuned.items())),
                         _dotted(path), f"`{_dotted(path)}` no longer has "
                                        f"{_block_name(entry)!r}"))
            continue
        entries[same[0]], missing = _filled(entries[same[0]], tuned,
                                            f"{_dotted(path)}[{same[0]}]",
                                            only_fitting=only_fitting)
        lost += missing
    parent[path[-1]] = entries
    return lost


def _reached(merged: dict[str, Any], defaults: dict[str, Any], alternative: dict[str, Any]
             ) -> list[str]:
    """The blocks (dotted paths) in which some value a shortcut set (where ``defaults`` and
    ``alternative`` differ) survives in ``merged``."""
    found: list[str] = []

    def walk(d: Any, a: Any, m: Any, where: tuple[Any, ...]) -> None:
        if isinstance(d, dict) and isinstance(a, dict):
            if _block_name(m) != _block_name(d) and (parts := _parts_named(m, d.get("name"))):
                for part in parts:  # in a compound's part
                    walk(d, a, part, where)
                return
            for k, v in d.items():
                walk(v, a.get(k, _MISSING), m.get(k, _MISSING) if isinstance(m, dict)
                     else _MISSING, (*where, k))
        elif not _same(d, a) and _same(d, m):
            found.append(_dotted(where if isinstance(d, list) or len(where) < 2
                                 else where[:-1]))  # (a leaf: its block; a list: itself)

    for key in SECTIONS:
        d, a, m = defaults.get(key), alternative.get(key), merged.get(key)
        if key == "phases":
            for phase in d or []:
                name = phase.get("name")
                other = next((p for p in a or [] if p.get("name") == name), _MISSING)
                mine = next((p for p in m or [] if p.get("name") == name), _MISSING)
                walk(phase, other, mine, ("phases", name))
        else:
            walk(d, a, m, (key,))
    return list(dict.fromkeys(found))


# ---------------------------------------------------------------------------- building


def _registry() -> Any:
    from infoblocks.plugins.registry import get_registry

    return get_registry()


def build_global(spec: Any, path: str) -> Any:
    """A :class:`~infoblocks.blocks.routine.GlobalRelation` from ``{input, relation,
    transforms}``; every block is built through the registry."""
    from .routine import GlobalRelation

    if not isinstance(spec, dict):
        raise ConfigError(f"{path} must be a table with keys {list(GLOBAL_KEYS)}, got {spec!r}.")
    extra = sorted(set(spec) - set(GLOBAL_KEYS))
    if extra:
        raise ConfigError(f"{path}: unknown key(s) {extra}; a global has {list(GLOBAL_KEYS)}.")
    registry = _registry()
    relation = spec.get("relation")
    transforms = spec.get("transforms") or []
    if not isinstance(transforms, list):
        raise ConfigError(f"{path}.transforms must be a list of transforms, got {transforms!r}.")
    source = spec.get("input", "data")
    if not isinstance(source, str):
        raise ConfigError(f"{path}.input must name a dataset array or an earlier global, got "
                          f"{source!r}.")
    return GlobalRelation(
        relation=None if relation is None else registry.build("relation", relation,
                                                                path=f"{path}.relation"),
        transforms=[registry.build("transform", t, path=f"{path}.transforms[{k}]")
                    for k, t in enumerate(transforms)],
        input=source)


def block_fields(kind: str, name: Any) -> dict[str, attrs.Attribute] | None:
    """Init fields (by their keyword) of the block registered as ``name`` of ``kind``; None
    for an unknown name or a block that is not an attrs class."""
    registry = _registry()
    if not isinstance(name, str) or (kind, name) not in registry:
        return None
    cls = registry.get(kind, name)
    return {f.alias or f.name: f for f in attrs.fields(cls) if f.init} \
        if attrs.has(cls) else None


def _as_table(spec: Any) -> dict[str, Any] | None:
    """A block spec as a table (``"name"`` -> ``{"name": "name"}``); None for an instance."""
    if isinstance(spec, str):
        return {"name": spec}
    return dict(spec) if isinstance(spec, dict) else None


def fill_context(kind: str, spec: Any, context: dict[str, Any] | None) -> Any:
    """``spec`` (a name or a table) with the ``context`` values filled into the fields the
    block has and the spec leaves out (``None`` values are not filled): so a plugin block
    named alone (``sampler = "my_sims"``) receives the recipe's sizes and settings as the
    built-in one does; never the block's ``own_fields``.  Instances and unknown names are
    returned as they are (the build reports an unknown name with its path)."""
    params = _as_table(spec) if context else None
    fields = block_fields(kind, params.get("name")) if params is not None else None
    if fields is None:
        return spec
    own = set(getattr(_registry().get(kind, params["name"]), "own_fields", ()))
    params.update({k: as_declared(fields[k], v) for k, v in context.items()
                   if k in fields and k not in params and v is not None and k != "name"
                   and k not in own})
    return params


def as_declared(field: attrs.Attribute, value: Any) -> Any:
    """A recipe's number as the type the block's field declares, where that loses nothing:
    a whole float (MI-NEE's ``reference_factor = 4.0``) into an ``int`` field, an int into a
    ``float`` field.  Anything else is returned as it is (the build checks it)."""
    declared = field.type.__name__ if isinstance(field.type, type) else str(field.type)
    declared = declared.replace(" ", "").replace("typing.", "").replace("|None", "")
    declared = declared.removeprefix("Optional[").removesuffix("]") \
        if declared.startswith("Optional[") else declared
    if declared == "int" and isinstance(value, float) and value.is_integer():
        return int(value)
    if declared == "float" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def cap_fields(kind: str, spec: Any, caps: dict[str, int],
               batch_types: tuple[Any, ...] | None = None) -> Any:
    """``spec`` with each integer field named in ``caps`` at most its cap — the value the spec
    sets, else the block's default — for the fields the block has (only for a sampler whose
    ``batch_type`` is in ``batch_types``, when given).  A recipe caps a sampler's
    ``batch_size`` at the rows it draws from this way, in the spec and before the build, so
    a plugin's sampler gets what the built-in gets and no block is changed after it is
    built.  Instances and unknown names are returned as they are."""
    params = _as_table(spec)
    fields = block_fields(kind, params.get("name")) if params is not None else None
    if fields is None or (batch_types is not None and getattr(
            _registry().get(kind, params["name"]), "batch_type", None) not in batch_types):
        return spec
    for key, cap in caps.items():
        if key not in fields:
            continue
        value = params.get(key, fields[key].default)
        if isinstance(value, int) and not isinstance(value, bool) and value > cap:
            params[key] = cap
    return params


def build_model(spec: Any, path: str, context: dict[str, Any]) -> Any:
    """A model block from ``spec``, with the data-dependent ``context`` (``in_dim``,
    ``out_dim``, ``n_items`` ...) filled into the fields the block has and the spec leaves
    out.  A ``torch.nn.Module`` or a built model block is returned as it is."""
    from .models import Model

    if isinstance(spec, Model) or (not isinstance(spec, (str, dict))
                                   and hasattr(spec, "parameters")):
        return spec
    if not isinstance(spec, (str, dict)):  # (dict(3): a bare TypeError)
        raise ConfigError(f"{path} must be a model's name or a table {{name = \"mlp\", ...}}, "
                          f"got {spec!r}.")
    registry = _registry()
    params = {"name": spec} if isinstance(spec, str) else dict(spec)
    if "name" not in params:
        raise ConfigError(f"{path}: a model needs a 'name' (e.g. \"mlp\"), got {spec!r}.")
    return registry.build("model", fill_context("model", params, context), path=path)


def build_phase(spec: Any, path: str, sampler_context: dict[str, Any] | None = None,
                validation_context: dict[str, Any] | None = None) -> Any:
    """A :class:`~infoblocks.blocks.phases.TrainingPhase` from a dict; sampler, loss and the
    validation's blocks through the registry.  ``sampler_context`` / ``validation_context``
    are filled into the phase's / the validation's sampler (:func:`fill_context`)."""
    from .config import structure
    from .phases import TrainingPhase, Validation

    if not isinstance(spec, dict):
        raise ConfigError(f"{path} must be a table, got {spec!r}.")
    registry = _registry()
    spec = dict(spec)
    if "sampler" in spec:
        spec["sampler"] = fill_context("sampler", spec["sampler"], sampler_context)
    for slot in ("sampler", "loss"):
        if slot in spec:
            spec[slot] = registry.build(slot, spec[slot], path=f"{path}.{slot}")
    validation = spec.get("validation")
    if isinstance(validation, dict):
        validation = dict(validation)
        if "sampler" in validation:
            validation["sampler"] = fill_context("sampler", validation["sampler"],
                                                 validation_context)
        for slot in ("sampler", "loss"):
            if slot in validation:
                validation[slot] = registry.build(slot, validation[slot],
                                                  path=f"{path}.validation.{slot}")
        spec["validation"] = structure(validation, Validation, f"{path}.validation")
    return structure(spec, TrainingPhase, path)


__all__ = ["SECTIONS", "ShortcutWarning", "warn_once", "section_field", "merge_entry", "merge_sections",
           "expand_sections", "section_edits", "apply_edits", "shortcut_fields", "block_fields",
           "as_declared", "fill_context",
           "cap_fields", "build_global", "build_model", "build_phase"]
