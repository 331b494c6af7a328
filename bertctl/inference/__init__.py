"""Inference: one way from a model dir and some texts to predictions, for every command that predicts.

    from bertctl import inference
    classifier = inference.load_for_inference("runs/agnews")        # a torch run dir, or an ONNX export dir
    result = inference.predict_texts(classifier, ["Stocks fell"], top_k=2)
    inference.predict_command(file=Path("news.csv"), output=Path("preds.csv"))   # `bertctl predict`

    classifier   Classifier (a torch model or an onnxruntime session behind one interface), RunSettings
    onnx         an export dir on onnxruntime + tokenizers alone: torch is never imported
    loading      load_for_inference: the one loader of a model for prediction
    forward      tokenize (truncation or --chunks windows), length-sorted batches, logits
    requests     texts from the command line, a file or stdin, a chunk at a time
    predict      check_request (predict's and serve's), scoring, labelling, predict_texts
    streaming    predict_stream and `bertctl predict`: chunked, resumable --output, many processes
"""

from bertctl.inference.classifier import DEFAULT_BATCH_SIZE, DEFAULT_CHUNK_SIZE, Classifier, RunSettings, model_max_length, read_run_settings
from bertctl.inference.forward import classify, encode, encoded_logits, infer_logits, logits, run_as_windows
from bertctl.inference.loading import QUANTIZE_CHOICES, load_for_inference
from bertctl.inference.predict import EMPTY_TEXT, Prediction, PredictResult, RequestError, Tally, check_request, label_items, predict_texts, score_items
from bertctl.inference.requests import InputStream, InputText, is_empty, open_inputs
from bertctl.inference.streaming import RecordFormat, StreamSummary, predict_command, predict_stream

__all__ = [
    "DEFAULT_BATCH_SIZE", "DEFAULT_CHUNK_SIZE", "EMPTY_TEXT", "QUANTIZE_CHOICES", "Classifier", "InputStream", "InputText", "Prediction",
    "PredictResult", "RecordFormat", "RequestError", "RunSettings", "StreamSummary", "Tally", "check_request", "classify", "encode",
    "encoded_logits", "infer_logits", "is_empty", "label_items", "load_for_inference", "logits", "model_max_length", "open_inputs",
    "predict_command", "predict_stream", "predict_texts", "read_run_settings", "run_as_windows", "score_items",
]
