"""ament_python package awopt_ros: works with `colcon build` and with `pip install` into a venv."""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = 'awopt_ros'

NODES = {
    'sim_robot': 'awopt_ros.nodes.sim_robot:main',
    'camera_pipeline': 'awopt_ros.nodes.camera_pipeline:main',
    'policy': 'awopt_ros.nodes.policy:main',
    'arm_interface': 'awopt_ros.nodes.arm_interface:main',
    'episode_manager': 'awopt_ros.nodes.episode_manager:main',
    'logger': 'awopt_ros.nodes.logger:main',
    'scripted_policy': 'awopt_ros.nodes.scripted_policy:main',
    'realsense_camera': 'awopt_ros.nodes.realsense_camera:main',
    'robot_state': 'awopt_ros.nodes.robot_state:main',
    'residual_controller': 'awopt_ros.nodes.residual_controller:main',
    'success_detector': 'awopt_ros.nodes.success_detector:main',
    'operator': 'awopt_ros.nodes.operator:main',
}

setup(
    name=PACKAGE,
    version='0.1.0',
    packages=find_packages(exclude=['test', 'test.*']),
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + PACKAGE]),
        ('share/' + PACKAGE, ['package.xml']),
        ('share/' + PACKAGE + '/launch', glob('launch/*.launch.py')),
        ('share/' + PACKAGE + '/config', glob('config/*')),
        ('share/' + PACKAGE + '/models', glob('models/*')),
        ('share/' + PACKAGE + '/urdf', glob('urdf/*')),
    ],
    install_requires=['setuptools', 'numpy', 'pyyaml'],
    zip_safe=True,
    maintainer='awopt_ros developers',
    maintainer_email='dev@awopt-ros.invalid',
    description='Learned manipulation policies on ROS 2 arms (AW-Opt).',
    license='Apache-2.0',
    tests_require=['pytest'],
    entry_points={
        'console_scripts': [f'awopt_{name}={target}' for name, target in NODES.items()]
        + ['awopt=awopt_ros.cli:main'],
    },
)
