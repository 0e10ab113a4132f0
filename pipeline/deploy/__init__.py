"""Deployment: a run's model composed with its stage-1 network (:mod:`.compose`), written for a
runtime (one module each: :mod:`.as_keras`, :mod:`.as_savedmodel`, :mod:`.as_tflite`,
:mod:`.as_openvino`), and checked against ``predict`` (:mod:`.export`).

Nothing is imported here: stage 3 imports :mod:`.compose` alone, without the runtimes.
"""
