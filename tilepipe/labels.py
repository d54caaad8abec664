"""What the values of a mask and of its probabilities mean: the constants every layer reads.

The model layer refuses a head with too many classes for them, the blender writes them, the store
declares them as its fill value and scale factor, the exporters and the report read them. They
live in a leaf of their own so that none of those depends on another for them (the model and
the blender on the store's writer, as they did when the constants sat in :mod:`tilepipe.sink`).
"""

NO_LABEL = 255
"""The mask value for pixels where the source has no data (and the Zarr fill value)."""
PROBABILITY_SCALE = 255
"""Stored probabilities are uint8 ``round(p * PROBABILITY_SCALE)``: 1/255 steps, the full uint8 range
(unrelated to NO_LABEL, a label value)."""
