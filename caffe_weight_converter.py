"""Drop-in module for scripts written against the older caffe_weight_converter.

``from caffe_weight_converter import convert_caffemodel_to_keras`` and
``python -m caffe_weight_converter OUT PROTOTXT CAFFEMODEL`` keep working, with
caffeport's conversion (and its fixes) behind them. See caffeport.compat.
"""

from caffeport.compat import convert_caffemodel_to_dict, convert_caffemodel_to_keras, main

__all__ = ["convert_caffemodel_to_dict", "convert_caffemodel_to_keras", "main"]

if __name__ == "__main__":
    raise SystemExit(main())
