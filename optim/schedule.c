/* Learning-rate schedules in closed form: lr(t) depends on t alone, so a
 * resumed run needs only its step count. Computed in double, as PyTorch's
 * schedulers do in Python. */
#include <math.h>

#include "nb_optim.h"

nb_schedule nb_schedule_default(void) {
    return (nb_schedule){.kind = NB_SCHED_CONSTANT, .lr = 0.1f, .warmup_start_factor = 0.01f,
                         .gamma = 0.1f, .pct_start = 0.3f, .div_factor = 25.0f,
                         .final_div_factor = 1e4f};
}

const char *nb_schedule_kind_name(nb_schedule_kind k) {
    static const char *const names[NB_SCHED_COUNT] = {
        [NB_SCHED_CONSTANT] = "constant", [NB_SCHED_STEP] = "step", [NB_SCHED_MULTISTEP] = "multistep",
        [NB_SCHED_COSINE] = "cosine", [NB_SCHED_ONECYCLE] = "onecycle"};
    return (int)k >= 0 && k < NB_SCHED_COUNT ? names[k] : NULL;
}

#define BAD(...) nb_set_error(NB_STATUS_BAD_INPUT, __VA_ARGS__)

/* Range checks written so that NaN fails them. */
nb_status nb_schedule_check(const nb_schedule *s) {
    const char *name = nb_schedule_kind_name(s->kind);
    if (!name)
        return BAD("schedule: kind must be constant, step, multistep, cosine or onecycle, got %d", (int)s->kind);
    if (!(s->lr > 0.0f && isfinite(s->lr))) return BAD("schedule: lr must be > 0, got %g", (double)s->lr);
    if (s->warmup_steps < 0) return BAD("schedule: warmup_steps must be >= 0, got %ld", s->warmup_steps);
    if (!(s->warmup_start_factor >= 0.0f && s->warmup_start_factor <= 1.0f))
        return BAD("schedule: warmup_start_factor must be in [0, 1], got %g", (double)s->warmup_start_factor);
    if ((s->kind == NB_SCHED_COSINE || s->kind == NB_SCHED_ONECYCLE) && s->total_steps <= 0)
        return BAD("schedule: total_steps must be > 0 for %s, got %ld", name, s->total_steps);
    if ((s->kind == NB_SCHED_STEP || s->kind == NB_SCHED_MULTISTEP) && !(s->gamma > 0.0f && isfinite(s->gamma)))
        return BAD("schedule: gamma must be > 0 for %s, got %g", name, (double)s->gamma);
    switch (s->kind) {
    case NB_SCHED_STEP:
        if (s->step_size <= 0) return BAD("schedule: step_size must be > 0 for step, got %ld", s->step_size);
        break;
    case NB_SCHED_MULTISTEP:
        if (s->n_milestones < 1 || s->n_milestones > NB_SCHED_MAX_MILESTONES)
            return BAD("schedule: n_milestones must be in [1, %d] for multistep, got %d", NB_SCHED_MAX_MILESTONES,
                       s->n_milestones);
        for (int i = 0; i < s->n_milestones; i++)
            if (s->milestones[i] < 0 || (i > 0 && s->milestones[i] <= s->milestones[i - 1]))
                return BAD("schedule: milestones must be increasing and >= 0, got %ld at index %d",
                           s->milestones[i], i);
        break;
    case NB_SCHED_COSINE:
        if (s->warmup_steps >= s->total_steps)
            return BAD("schedule: warmup_steps (%ld) must be < total_steps (%ld) for cosine", s->warmup_steps,
                       s->total_steps);
        if (!(s->min_lr >= 0.0f && s->min_lr <= s->lr))
            return BAD("schedule: min_lr must be in [0, lr = %g], got %g", (double)s->lr, (double)s->min_lr);
        break;
    case NB_SCHED_ONECYCLE:
        if (s->warmup_steps != 0)
            return BAD("schedule: warmup_steps must be 0 for onecycle (it warms up by itself), got %ld",
                       s->warmup_steps);
        if (!(s->pct_start > 0.0f && s->pct_start < 1.0f))
            return BAD("schedule: pct_start must be in (0, 1), got %g", (double)s->pct_start);
        /* PyTorch divides by the rise's length pct_start * total_steps - 1. */
        if (!((double)s->pct_start * (double)s->total_steps > 1.0))
            return BAD("schedule: pct_start * total_steps must be > 1 for onecycle, got %g * %ld",
                       (double)s->pct_start, s->total_steps);
        if (!(s->div_factor > 0.0f && isfinite(s->div_factor)))
            return BAD("schedule: div_factor must be > 0, got %g", (double)s->div_factor);
        if (!(s->final_div_factor > 0.0f && isfinite(s->final_div_factor)))
            return BAD("schedule: final_div_factor must be > 0, got %g", (double)s->final_div_factor);
        break;
    default:
        break;
    }
    return NB_OK;
}

/* Factor of the step decays at step t (1 for the other kinds). */
static double decay(const nb_schedule *s, long t) {
    if (s->kind == NB_SCHED_STEP) return pow((double)s->gamma, (double)(t / s->step_size));
    if (s->kind != NB_SCHED_MULTISTEP) return 1.0;
    int passed = 0;
    while (passed < s->n_milestones && s->milestones[passed] <= t) passed++;
    return pow((double)s->gamma, passed);
}

/* PyTorch's OneCycleLR (anneal_strategy "cos", two phases): initial lr / div
 * at step 0, lr at step pct_start T - 1, initial / final_div at T - 1. */
static double onecycle(const nb_schedule *s, long t) {
    const double peak = (double)s->lr, initial = peak / (double)s->div_factor;
    const double final = initial / (double)s->final_div_factor;
    const double rise_end = (double)s->pct_start * (double)s->total_steps - 1.0;
    const double end = (double)(s->total_steps - 1);
    const double x = (double)(t < s->total_steps - 1 ? t : s->total_steps - 1);
    double from = initial, to = peak, pct = x / rise_end;
    if (x > rise_end) {
        from = peak;
        to = final;
        pct = (x - rise_end) / (end - rise_end);
    }
    return to + (from - to) / 2.0 * (cos(M_PI * pct) + 1.0);
}

float nb_schedule_lr(const nb_schedule *s, long t) {
    const double lr = (double)s->lr;
    if (t < 0) t = 0;
    if (s->kind == NB_SCHED_ONECYCLE) return (float)onecycle(s, t);
    /* Linear warmup multiplies the step decays, as PyTorch's ChainedScheduler
     * of LinearLR and StepLR/MultiStepLR does (a milestone inside the warmup
     * counts); cosine starts after it. */
    if (t < s->warmup_steps) {
        const double f = (double)s->warmup_start_factor;
        return (float)(lr * (f + (1.0 - f) * (double)t / (double)s->warmup_steps) * decay(s, t));
    }
    if (s->kind != NB_SCHED_COSINE) return (float)(lr * decay(s, t));
    const double lo = (double)s->min_lr;
    const long tc = t - s->warmup_steps, T = s->total_steps - s->warmup_steps;
    if (tc >= T) return (float)lo;
    return (float)(lo + (lr - lo) * (1.0 + cos(M_PI * (double)tc / (double)T)) / 2.0);
}
