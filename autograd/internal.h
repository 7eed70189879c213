/* autograd/ internals shared by the tape and the profiler. */
#ifndef NB_AUTOGRAD_INTERNAL_H
#define NB_AUTOGRAD_INTERNAL_H

#include "nb_autograd.h"

/* Adds one step's nodes (their t_fwd, t_bwd) to the profile. */
void nb_profile_add_nodes(nb_profile *p, const nb_node *nodes, size_t n);

#endif
