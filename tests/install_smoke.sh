#!/usr/bin/env bash
# cmake --install into a temporary prefix, then build and run a program
# against the installed library through pkg-config.
set -euo pipefail
build=$1
prefix=$(mktemp -d)
trap 'rm -rf "$prefix"' EXIT
cmake --install "$build" --prefix "$prefix" > /dev/null
export PKG_CONFIG_PATH=$prefix/lib/pkgconfig
cat > "$prefix/app.c" <<'C'
#include <nibble.h>
#include <stdio.h>
int main(void) {
    nb_rng r;
    nb_rng_seed(&r, 1, 0);
    nb_model_opts o = nb_model_opts_default();
    nb_model *m = nb_model_build("resnet20", &o, &r);
    printf("%zu\n", nb_model_param_count(m));
    nb_model_free(m);
    return 0;
}
C
# pkg-config's prefix comes from the configure step; point it at the copy
cc "$prefix/app.c" -I"$prefix/include/nibble" -L"$prefix/lib" -lnibble \
   $(pkg-config --cflags --libs openblas hdf5 libcjson libpng libjpeg libprotobuf-c) -fopenmp -lm -o "$prefix/app"
pkg-config --exists nibble
test "$("$prefix/app")" = 269722
test -x "$prefix/bin/nibble"
echo "install smoke test passed"
