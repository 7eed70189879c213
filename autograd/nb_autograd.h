/*
 * nb_autograd.h — the tape (a Wengert list) and reverse-mode differentiation.
 *
 * Ops record one node each in forward order: the op's definition (a name and
 * an eager backward kernel), its inputs, its output and whatever it saved.
 * nb_backward() seeds d(loss) = 1 and walks the nodes in reverse; backward
 * kernels accumulate (+=) into their inputs' gradients, so a tensor used
 * twice (a residual connection) gets the sum. Everything made during a step
 * (outputs, saved state, node list, activation gradients) lives in the
 * tape's arena and its gradient pool and is recycled by nb_tape_reset(): the
 * steady-state step allocates nothing.
 *
 * Example:
 *     nb_tape *tape = nb_tape_new();
 *     nb_tensor *logits = nb_model_forward(model, tape, x);   // records
 *     nb_tensor *loss = nb_cross_entropy(tape, logits, labels, 0.0f);
 *     nb_backward(tape, loss);          // grads land in parameters' ->grad
 *     ... optimizer step ...
 *     nb_tape_reset(tape);
 *
 * autograd/ knows ops only through their nb_op_def.
 */
#ifndef NB_AUTOGRAD_H
#define NB_AUTOGRAD_H

#include "nb_core.h"

typedef struct nb_tape nb_tape;
typedef struct nb_node nb_node;

/* What the tape knows of an op: its name and its backward kernel. The kernel
 * reads n->out->grad and accumulates into the inputs that require grad,
 * getting their gradient buffers with nb_tape_grad(). describe (optional)
 * names one node for the profiler, e.g. "conv2d 3x3/2 64->128 16x16
 * im2col"; without it a node is its op's name and output shape. */
typedef struct {
    const char *name;
    void (*backward)(nb_tape *tape, nb_node *n);
    void (*describe)(const nb_node *n, char *buf, size_t len);
} nb_op_def;

#define NB_NODE_MAX_IN 4

struct nb_node {
    const nb_op_def *op;
    nb_tensor *out;
    nb_tensor *in[NB_NODE_MAX_IN]; /* unused slots NULL */
    void *saved;                   /* op-specific, in the tape's arena */
    double t_fwd, t_bwd;           /* seconds, kept while a profile is attached */
};

/* A new tape with gradients enabled; owned, free with nb_tape_free. */
nb_tape *nb_tape_new(void);
void nb_tape_free(nb_tape *t);
/* Forget the step: nodes, arena and pooled gradients are recycled. Tensors
 * made on the tape become invalid, and so does the ->grad of any caller-owned
 * leaf tensor that received a pooled gradient (set it to NULL before reuse);
 * parameters keep their own gradient buffers. */
void nb_tape_reset(nb_tape *t);

nb_arena *nb_tape_arena(nb_tape *t);
/* A tensor in the tape's arena (uninitialised); asserts on OOM-free paths,
 * returns NULL with NB_STATUS_OOM set when memory runs out. */
nb_tensor *nb_tape_tensor(nb_tape *t, int ndim, const int *shape);
/* Raw scratch memory in the arena (64-byte aligned). */
void *nb_tape_scratch(nb_tape *t, size_t bytes);
/* Scratch that an op needs only while it runs: take a mark before
 * allocating it and release it when done (nothing the op keeps, output or
 * saved state, may be allocated in between). The reverse walk does this
 * around every backward kernel, so a backward's scratch never outlives it. */
nb_arena_mark nb_tape_mark(nb_tape *t);
void nb_tape_release(nb_tape *t, nb_arena_mark m);

/* A protected call (Lua's luaD_rawrunprotected): runs fn(user) so that an
 * allocation of the tape failing inside it (an activation, scratch memory,
 * a node, a gradient) ends the call with NB_STATUS_OOM and a message naming
 * what could not be allocated, instead of the op's NB_ASSERT. The tape is
 * then reset and its gradient mode restored; whatever fn changed outside
 * the tape (batchnorm running statistics, ...) may be half done. Otherwise
 * returns fn's status. No allocation of the tape may happen inside an
 * OpenMP parallel region (none does: ops allocate before their loops). */
nb_status nb_tape_protect(nb_tape *t, nb_status (*fn)(void *user), void *user);

/* Gradient recording on/off (no_grad for evaluation). Returns the old value. */
int nb_tape_set_grad(nb_tape *t, int enabled);

/* Should an op with these inputs record a node? (grad enabled and some input
 * requires grad). Inputs may be NULL. */
int nb_tape_wants(const nb_tape *t, const nb_tensor *a, const nb_tensor *b,
                  const nb_tensor *c);
/* Record a node for `out` (sets out->requires_grad). Returns the node so the
 * op can attach saved state; NULL on OOM. */
nb_node *nb_tape_record(nb_tape *t, const nb_op_def *op, nb_tensor *out,
                        nb_tensor *in0, nb_tensor *in1, nb_tensor *in2);

/* The gradient buffer of t: the parameter's own for parameters, else a
 * zeroed buffer from the tape's pool, made on first use. */
float *nb_tape_grad(nb_tape *tape, nb_tensor *t);
/* Like nb_tape_grad, but a buffer made by this call is not zeroed: *fresh
 * is set to 1 and the caller must write (=) every element instead of adding
 * (+=). Saves a pass over memory in the kernels that can use it. */
float *nb_tape_grad_fresh(nb_tape *tape, nb_tensor *t, int *fresh);

/* The gradient buffer of `to` for an elementwise backward that can work in
 * place: when `to` has no gradient yet and from's gradient (the node's
 * output's, same numel) is a pooled buffer, that buffer is handed to `to`
 * and returned with *fresh = 1 (it holds d(from): the caller reads each
 * element before writing d(to) over it, so read from's gradient pointer
 * before this call); else as nb_tape_grad_fresh. */
float *nb_tape_grad_inplace(nb_tape *tape, nb_tensor *from, nb_tensor *to, int *fresh);

/* Reverse pass from a scalar (numel 1) loss: d(loss) = 1. */
nb_status nb_backward(nb_tape *t, nb_tensor *loss);
/* Reverse pass from any tensor with a given upstream gradient (numel of
 * out); the seed is copied. */
nb_status nb_backward_seed(nb_tape *t, nb_tensor *out, const float *seed);

size_t nb_tape_nodes(const nb_tape *t);
/* Bytes of gradient buffers held by the pool (all sizes). */
size_t nb_tape_pool_bytes(const nb_tape *t);

/* ----------------------------------------------------------- profiling */

/* Time per node kind, summed over steps. Attach one to a tape: each node's
 * forward time is the time since the previous node was recorded (or since
 * nb_tape_profile_mark), its backward time that of its kernel; at every
 * nb_tape_reset the step's nodes are added up under their descriptions
 * (nb_op_def.describe). Costs two clock reads per node. */
typedef struct nb_profile nb_profile;

nb_profile *nb_profile_new(void);
void nb_profile_free(nb_profile *p);
/* NULL detaches. The profile must outlive the attachment. */
void nb_tape_set_profile(nb_tape *t, nb_profile *p);
/* Forward time of the next recorded node starts now (call right before a
 * step's forward). */
void nb_tape_profile_mark(nb_tape *t);
/* Forget what was summed (after warm-up steps). */
void nb_profile_clear(nb_profile *p);
/* The table, rows sorted by total time: count per step, forward and
 * backward milliseconds per step and the share of the summed total;
 * `steps` divides the sums. */
void nb_profile_print(const nb_profile *p, int steps, FILE *f);

/* ---------------------------------------------------------- gradcheck */

/* Builds the graph from `inputs` on `tape` and returns the output tensor
 * (any shape). Called with gradients enabled once and in no-grad mode for
 * each perturbation. */
typedef nb_tensor *(*nb_gradcheck_fn)(nb_tape *tape, nb_tensor **inputs, void *user);

typedef struct {
    double eps;        /* perturbation (default 1e-2) */
    double tol;        /* max symmetric relative error (default 1e-2) */
    double atol;       /* errors below atol * max|analytic grad| of the input
                          are float noise and ignored (default 1e-3) */
    int max_samples;   /* elements checked per input (default 64, 0 = all) */
    uint64_t seed;     /* sampling and the random projection of the output */
} nb_gradcheck_opts;

typedef struct {
    int checked;
    int skipped;       /* elements near a kink (one-sided slopes disagree) */
    double max_err;    /* worst symmetric relative error seen */
    int worst_input, worst_index;
    double worst_analytic, worst_numeric;
} nb_gradcheck_result;

nb_gradcheck_opts nb_gradcheck_opts_default(void);
/* Compares analytic gradients of L = sum(out * r) (r fixed random, summed in
 * double) with central differences for each input with requires_grad.
 * Inputs are caller-owned heap tensors. Returns NB_OK when all checked
 * elements agree, NB_STATUS_NUMERIC with a message naming input and element
 * otherwise. The tape is reset before return. */
nb_status nb_gradcheck(nb_tape *tape, nb_gradcheck_fn fn, void *user,
                       nb_tensor **inputs, int n_inputs,
                       const nb_gradcheck_opts *opts, nb_gradcheck_result *res);

#endif /* NB_AUTOGRAD_H */
