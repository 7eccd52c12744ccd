"""Image classifiers: decoding uploads, serving a classifier, and registering one.

Serving-time (numpy, Pillow; onnxruntime through the model):

    decode.py       uploaded bytes -> RGB image -> model input tensor, strictly: limits, PixelBudget, errors
    classifier.py   a registered classifier's stored preprocessing (Preprocessor) and class labels, the
                    Classifier (decoding, scores to probabilities, top k) the served model builds at load

Import-time (run once, when a model is registered):

    register.py     import_image_classifier: the preprocessing spec parsed, the model run once to check that
                    model, labels and preprocessing fit; register_pretrained_mobilenet_v2
    pretrained/     MobileNetV2 with torchvision's weights exported to ONNX (torch), the ImageNet labels

Serving never imports torch: only exporting the pretrained model does (``pretrained.mobilenet_v2`` imports it
inside the functions that build and export the network). Nothing here knows of HTTP or imports
``modelport.serving``: ``modelport.serving.images`` is the HTTP edge over this package.
"""
