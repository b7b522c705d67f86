"""Streaming weights into output files without a copy of the model in memory.

- `caffeport.streaming.blocks`: a blob in chunks or in placed runs (offset
  in the target, contiguous data) for any lazy view, the one writing loop
  (`stream_placed`, a writer thread, vectored writes, the kernel's copy where
  bytes go out as stored) and progress;
- `caffeport.streaming.tiled_transpose`: Dense kernels (a transposed weight
  matrix, with or without the flatten reorder) tile by tile, read with
  pread and spread over the target rows a strip at a time.

Exporters build on these; the IR (`caffeport.ir`) and file access
(`caffeport.io`) are below them. This package's own body imports nothing.
"""
