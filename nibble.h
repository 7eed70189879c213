/* nibble.h — the umbrella header: include this to use the library. */
#ifndef NIBBLE_H
#define NIBBLE_H

#include "nb_core.h"
#include "nb_plot.h"
#include "nb_autograd.h"
#include "nb_layers.h"
#include "nb_datasets.h"
#include "nb_optim.h"
#include "nb_quant.h"
#include "nb_alloc.h"
#include "nb_config.h"
#include "nb_alloc_files.h"
#include "nb_checkpoint.h"
#include "nb_runner.h"

#endif
