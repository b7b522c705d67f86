"""Graph lookups the passes share (precision, reports and blob counts are in `caffeport.layers.layout`)."""

from __future__ import annotations

import bisect

from caffeport.ir import Layer, Net


class BlobIndex:
    """Which layers read and write each blob, built once per pass so lookups cost O(log n), not a scan.

    A pass asking "who reads this BatchNorm's output next" for every BatchNorm
    would otherwise scan the rest of the net each time: quadratic, and a model
    with 20,000 such layers never finishes. Valid while the layers' bottoms,
    tops and order are unchanged (passes that only replace blobs or types keep it valid).
    """

    def __init__(self, net: Net) -> None:
        self.layers = net.layers
        self.readers: dict[str, list[int]] = {}
        self.writers: dict[str, list[int]] = {}
        for index, layer in enumerate(net.layers):
            for blob in dict.fromkeys(layer.bottoms):
                self.readers.setdefault(blob, []).append(index)
            for blob in dict.fromkeys(layer.tops):
                self.writers.setdefault(blob, []).append(index)

    def first_reader(self, index: int, blob: str) -> tuple[int, Layer] | None:
        """The first layer after ``layers[index]`` that reads ``blob``."""
        readers = self.readers.get(blob, [])
        at = bisect.bisect_right(readers, index)
        return (readers[at], self.layers[readers[at]]) if at < len(readers) else None

    def last_writer(self, index: int, blob: str) -> tuple[int, Layer] | None:
        """The last layer before ``layers[index]`` that writes ``blob``."""
        writers = self.writers.get(blob, [])
        at = bisect.bisect_left(writers, index)
        return (writers[at - 1], self.layers[writers[at - 1]]) if at > 0 else None
