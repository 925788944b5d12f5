# Loaded through CMAKE_PROJECT_INCLUDE by awopt_ros/tools/build_interfaces.py.
#
# The PyPI ROS wheels export CMake targets whose INTERFACE_INCLUDE_DIRECTORIES name the Python and
# NumPy header folders of the machine that built the wheels (/opt/python/...). CMake refuses to
# generate when an imported target names a folder that does not exist. At the end of the
# configure step this rewrites such folders to this machine's headers:
#   .../include/pythonX.Y          -> AWOPT_PYTHON_INCLUDE (sysconfig 'include' of the venv python)
#   .../numpy/_core/include        -> AWOPT_NUMPY_INCLUDE (numpy.get_include())
# and drops any other missing folder with a message. Existing folders are kept as they are.

function(awopt_fix_imported_include_dirs)
  get_directory_property(_targets IMPORTED_TARGETS)
  foreach(_target IN LISTS _targets)
    get_target_property(_dirs ${_target} INTERFACE_INCLUDE_DIRECTORIES)
    if(NOT _dirs)
      continue()
    endif()
    set(_fixed "")
    set(_changed FALSE)
    foreach(_dir IN LISTS _dirs)
      if(_dir MATCHES "^\\$<" OR EXISTS "${_dir}")
        list(APPEND _fixed "${_dir}")
      elseif(_dir MATCHES "numpy/(_core|core)/include$" AND AWOPT_NUMPY_INCLUDE)
        list(APPEND _fixed "${AWOPT_NUMPY_INCLUDE}")
        set(_changed TRUE)
      elseif(_dir MATCHES "/include/python[0-9.]+m?$" AND AWOPT_PYTHON_INCLUDE)
        list(APPEND _fixed "${AWOPT_PYTHON_INCLUDE}")
        set(_changed TRUE)
      else()
        message(STATUS "awopt: ${_target}: dropping missing include folder ${_dir}")
        set(_changed TRUE)
      endif()
    endforeach()
    if(_changed)
      list(REMOVE_DUPLICATES _fixed)
      set_target_properties(${_target} PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${_fixed}")
    endif()
  endforeach()
endfunction()

cmake_language(DEFER DIRECTORY "${CMAKE_SOURCE_DIR}" CALL awopt_fix_imported_include_dirs)
