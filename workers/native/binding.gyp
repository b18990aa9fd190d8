{
  # N-API addon over OpenBLAS (BLAS + the LAPACK routines it bundles). Built by
  # scripts/build-native.mjs; the output must stay build/Release/spngd_blas.node.
  'targets': [
    {
      'target_name': 'spngd_blas',
      'sources': ['spngd_blas.cc'],
      'dependencies': [
        "<!(node -p \"require('node-addon-api').targets\"):node_addon_api_except",
      ],
      'defines': ['NAPI_VERSION=8'],
      # Where distributions put cblas.h: Debian/Ubuntu (multiarch alternative and the pthread
      # variant's own directory), Fedora/RHEL, Homebrew. Missing directories are harmless.
      'include_dirs': [
        '/usr/include/<!(uname -m)-linux-gnu',
        '/usr/include/<!(uname -m)-linux-gnu/openblas-pthread',
        '/usr/include/openblas',
        '/usr/local/opt/openblas/include',
        '/opt/homebrew/opt/openblas/include',
      ],
      # -ffp-contract=off: no fused multiply-adds, so the element-wise kernels round exactly like
      # their JavaScript versions (src/compute/elementwise.ts).
      'cflags_cc': ['-O3', '-std=c++17', '-ffp-contract=off'],
      # OpenBLAS ships dpotrf_/dpotri_ itself (checked with nm on Debian 12's libopenblas0-pthread),
      # so no separate liblapack is needed.
      'libraries': ['-lopenblas', '-ldl'],
      'conditions': [
        ["OS=='mac'", {
          'libraries': [
            '-L/usr/local/opt/openblas/lib',
            '-L/opt/homebrew/opt/openblas/lib',
          ],
          'xcode_settings': {
            'OTHER_CPLUSPLUSFLAGS': ['-O3', '-std=c++17', '-ffp-contract=off'],
          },
        }],
      ],
    },
  ],
}
