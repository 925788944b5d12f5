"""ROS-free, torch-free logic: specs, image ops, ONNX wrappers, safety, kinematics, datasets."""
