"""QoS profiles (REP 2003): sensor data for camera and state, reliable for commands."""
from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy,
                       qos_profile_sensor_data)

SENSOR = qos_profile_sensor_data
COMMAND = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE,
                     history=HistoryPolicy.KEEP_LAST)
LATCHED = QoSProfile(depth=20, reliability=ReliabilityPolicy.RELIABLE,
                     history=HistoryPolicy.KEEP_LAST,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)
#: Sensor data for recorders: best effort like SENSOR, but a deep queue (about 3 s of 10 Hz
#: camera frames) so that a recorder busy for a moment (closing a bag) loses nothing.
RECORD_SENSOR = QoSProfile(depth=30, reliability=ReliabilityPolicy.BEST_EFFORT,
                           history=HistoryPolicy.KEEP_LAST)
#: Commands and decisions for recorders: reliable like COMMAND, but a deep queue (10 s of 10 Hz
#: actions) so that a recorder whose executor is held up for a moment (closing the previous
#: episode's bag and dataset on a loaded host) takes every action later instead of losing the
#: oldest (a lost action is a step missing from both the bag and the dataset).
RECORD_RELIABLE = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE,
                             history=HistoryPolicy.KEEP_LAST)
