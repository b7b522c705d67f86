"""The protobuf codec: the wire format both ways (`caffeport.codec.wire`), Caffe's schema tables
(`caffeport.codec.caffe_schema`) and the message walker that decodes by them (`caffeport.codec.messages`).

Below the readers and the writers alike: the caffemodel and prototxt readers
decode with it, the ``caffe`` exporter and the ONNX writer encode with it.
Importing it loads nothing else of caffeport but `caffeport.errors`.
"""
