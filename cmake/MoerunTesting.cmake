# Test registration helpers. A newcomer never types an mpirun line to test: CTest does.
#
#   moerun_add_test(NAME <name> TARGET <exe> [ARGS ...] [TIMEOUT s] [LABELS ...])
#   moerun_add_mpi_test(NAME <name> TARGET <exe> NP <n> [ARGS ...] [TIMEOUT s] [LABELS ...])
#
# MPI tests run under `mpirun -np N --oversubscribe` with the environment Open MPI needs to
# run as root (CI runs as root). A TIMEOUT makes a hang fail instead of stalling CI.

set(MOERUN_MPI_TEST_ENV
  OMPI_ALLOW_RUN_AS_ROOT=1
  OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
  OMPI_MCA_rmaps_base_oversubscribe=1
  # Containers often lack a usable shared-memory segment for vader's CMA; plain copies work.
  OMPI_MCA_btl_vader_single_copy_mechanism=none
  OMP_NUM_THREADS=1)

function(moerun_add_test)
  cmake_parse_arguments(T "" "NAME;TARGET;TIMEOUT" "ARGS;LABELS" ${ARGN})
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 300)
  endif()
  add_test(NAME ${T_NAME} COMMAND $<TARGET_FILE:${T_TARGET}> ${T_ARGS})
  set_tests_properties(${T_NAME} PROPERTIES TIMEOUT ${T_TIMEOUT} LABELS "unit;${T_LABELS}")
endfunction()

function(moerun_add_mpi_test)
  cmake_parse_arguments(T "" "NAME;TARGET;NP;TIMEOUT" "ARGS;LABELS" ${ARGN})
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 300)
  endif()
  add_test(NAME ${T_NAME}
    COMMAND ${MPIEXEC_EXECUTABLE} ${MPIEXEC_NUMPROC_FLAG} ${T_NP} --oversubscribe
            ${MPIEXEC_PREFLAGS} $<TARGET_FILE:${T_TARGET}> ${MPIEXEC_POSTFLAGS} ${T_ARGS})
  set_tests_properties(${T_NAME} PROPERTIES
    TIMEOUT ${T_TIMEOUT}
    LABELS "mpi;np${T_NP};${T_LABELS}"
    PROCESSORS ${T_NP}
    ENVIRONMENT "${MOERUN_MPI_TEST_ENV}")
endfunction()

# Runs an added test on the strict test backend (runtime/strict/strict_device.h): device memory
# the host cannot touch, asynchronous copies, recorded kernel shapes.
function(moerun_on_strict_device test)
  set_property(TEST ${test} APPEND PROPERTY ENVIRONMENT "MOERUN_TEST_DEVICE=strict")
  set_property(TEST ${test} APPEND PROPERTY LABELS strict)
endfunction()
