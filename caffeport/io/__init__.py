"""File access, the layer every reader and writer stands on: nothing here knows Caffe or the IR.

- `caffeport.io.mapped`: memory maps of model files, the file behind each
  map, preads from it and giving a view's pages back;
- `caffeport.io.output`: all-or-nothing output files (a hidden partial file
  renamed into place, early writeback), the signals deferred while one is
  committed, and worker threads that leave Ctrl-C to the main thread.

This package's own body imports nothing, so importing one module loads only it.
"""
