"""Where each setting of a run came from: the summary's "Settings and where they came from".

tilepipe takes a value from, lowest first: its default, the model card file, the YAML config
file, then a flag (or API keyword); :func:`tilepipe.config.resolve_settings` records the origin
of every option. This module reads those origins, together with the values the run actually used
(the source's bands and scaling, the model card's stride and classes), into the summary.
"""

from __future__ import annotations

import json


SETTINGS = ("model", "weights", "model_card", "bands", "scaling", "output_stride", "tile_size", "class_names")


def settings_origins(prepared, described: dict) -> dict:
    """The values that decide what the network sees and says, and where each came from:
    ``default``, ``card`` (the model card file), ``config`` (the YAML file) or ``flag`` (or API keyword)."""
    model, options, card = prepared.model, prepared.options, prepared.card_file
    origins = prepared.origins
    values = {
        "model": model.arch.name,
        "weights": model.weights_identity,
        "model_card": card.path if card else None,
        "bands": described["bands_used"],
        "scaling": described["scaling"],
        "output_stride": model.output_stride,
        "tile_size": options.tile_size,
        "class_names": list(model.class_names),
    }
    out = {k: {"value": values[k], "from": origins.get(k, "default")} for k in SETTINGS}
    if card and out["model_card"]["from"] == "default":
        out["model_card"]["from"] = "beside the checkpoint"
    out["class_colours"] = {"value": [list(c) for c in card.class_colours] if card and card.class_colours else "VOC palette",
                            "from": "card" if card and card.class_colours else "default"}
    out["normalisation"] = {"value": model.describe()["normalisation"],
                            "from": out["scaling"]["from"] if not model.spec.normalise else "default"}
    return out


def render_settings(settings: dict) -> list[str]:
    """Markdown lines: one table row per setting (value and origin)."""
    return ["## Settings and where they came from", "", "| setting | value | from |", "|---|---|---|",
            *[f"| {k} | {_setting_text(v['value'])} | {v['from']} |" for k, v in settings.items()]]


def _setting_text(value) -> str:
    if isinstance(value, dict) and "method" in value:  # a scaling
        return f"{value['method']} (low {value['low']}, high {value['high']})"
    text = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    return text if len(text) <= 120 else text[:117] + "..."
