"""Streaming detectors: Readings in, Detections and Alerts out, all on one interface (``base.Detector``).

Every detector has a ``kind`` (the ``kind`` of everything it emits), ``update(reading)``
and ``flush()``, ``reset()``, ``state()`` / ``restore(state)`` and ``model_name`` /
``check_model(backend)`` / ``use_model(backend)``. Rule-based ones (night flow, EAQI,
calibration drift without an estimator) run no exported model and refuse ``use_model``;
model detectors (``ModelDetector``: the learned leak detector and the air-site models)
hold their model in ``runtime_`` and take a verified new version of the same model,
keeping their state when its features are the same (see docs/model-updates.md for what
each one does otherwise). A drift detector with an estimator takes its estimator's.

=========================  =================  ==========================================
detector                   kind               decides on
=========================  =================  ==========================================
MinimumNightFlowDetector   leak               each night's minimum flow vs. its baseline
LearnedLeakDetector        leak               a learned model, every sample step
AqiDetector                aqi                the EAQI band of each hour
AirPatternDetector         air_pattern        the hour's air pattern (a model)
SensorFaultDetector        sensor_fault       each sensor's fault of the hour (a model)
No2VirtualSensor           no2_virtual        NO2 estimated from phones and weather
CalibrationDriftDetector   calibration        a Page-Hinkley test of each day
=========================  =================  ==========================================
"""

from edge.detectors.air_hourly import HourlyAirDetector
from edge.detectors.air_models import AirPatternDetector, No2VirtualSensor, SensorFaultDetector
from edge.detectors.aqi import AqiDetector
from edge.detectors.base import Detector, ModelDetector, ModelSwapError, Output
from edge.detectors.drift import CalibrationDriftDetector
from edge.detectors.leak_model import LearnedLeakDetector
from edge.detectors.night_flow import MinimumNightFlowDetector

__all__ = [
    "AirPatternDetector",
    "AqiDetector",
    "CalibrationDriftDetector",
    "Detector",
    "HourlyAirDetector",
    "LearnedLeakDetector",
    "MinimumNightFlowDetector",
    "ModelDetector",
    "ModelSwapError",
    "No2VirtualSensor",
    "Output",
    "SensorFaultDetector",
]
