"""CLEX (Chen et al., ICLR 2024): the RoPE frequency basis evolved over t by a neural ODE."""

import math

import torch
from torch import nn
from torchdiffeq import odeint

from clex.errors import ConfigError
from clex.rope.strategies.base import STRATEGIES, Strategy

ACTIVATIONS = {"tanh": torch.tanh, "silu": nn.functional.silu}
FIXED_STEP_METHODS = ("euler", "midpoint", "rk4", "explicit_adams", "implicit_adams")
ADAPTIVE_METHODS = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun")
BEYOND_MAX = ("clamp", "extrapolate")
MAX_SOLVER_STEPS = 10_000  # fixed-step solver steps over [1, t_max]: the defaults take ~12, 1e4 take seconds per solve


def check_options(max_scale, activation, dynamics, method, beyond_max, step_size, max_step_t, ntk_base, up_init):
    """The options' own checks, each one line naming the key and what it allows (before any tensor is made)."""
    if not max_scale >= 1:
        raise ConfigError(f"strategy.max_scale (t_max) must be >= 1, got {max_scale}")
    if activation not in ACTIVATIONS:
        raise ConfigError(f"strategy.activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}")
    if dynamics not in ("continuous", "discrete"):
        raise ConfigError(f"strategy.dynamics must be one of continuous, discrete, got {dynamics!r}")
    if method not in FIXED_STEP_METHODS + ADAPTIVE_METHODS:
        raise ConfigError(
            f"strategy.method must be one of {', '.join(FIXED_STEP_METHODS + ADAPTIVE_METHODS)}, got {method!r}"
        )
    if beyond_max not in BEYOND_MAX:
        raise ConfigError(f"strategy.beyond_max must be one of {', '.join(BEYOND_MAX)}, got {beyond_max!r}")
    if not (step_size > 0 and max_step_t > 0):
        raise ConfigError(f"strategy.step_size and strategy.max_step_t must be > 0, got {step_size}, {max_step_t}")
    # a fixed-step solve over t in [1, t_max] takes about this many steps (each bounded in s and in t)
    steps = math.log(2 * max_scale - 1) / step_size + (max_scale - 1) / max_step_t
    if method in FIXED_STEP_METHODS and steps > MAX_SOLVER_STEPS:
        raise ConfigError(
            f"strategy.step_size={step_size:g}, strategy.max_step_t={max_step_t:g}: the ODE solve over t "
            f"in [1, {max_scale:g}] would take about {steps:.3g} steps, more than the {MAX_SOLVER_STEPS} "
            f"allowed; raise strategy.step_size (default 0.5) or strategy.max_step_t (default 1.0)"
        )
    if ntk_base is not None and not ntk_base > 1:
        raise ConfigError(f"strategy.ntk_base must be > 1 or null (the model's base), got {ntk_base}")
    if up_init not in (None, "linear", "official"):
        raise ConfigError(f"strategy.up_init must be one of linear, official (or null: linear), got {up_init!r}")


@STRATEGIES.register("clex")
class Clex(Strategy):
    """CLEX: z(t) = log inv_freq(t) solves dz/dt = g(z, t), z(1) = log b^(-2j/d), with

        g(z, t) = W_down . act(W_up . (z + log ntk(t))) + xi(t),
        ntk(t)_j = (b * alpha^(d/(d-2)))^(-2j/d),  alpha = 2t - 1,
        xi_j(t) = d/dt log ntk(t)_j = -(2j/(d-2)) * 2/(2t-1).

    W_up: d/2 -> width, W_down: width -> d/2, no biases; width = ``projection_width`` or
    ``amplification * d``. W_down starts at zero, so at initialisation z(t) = log ntk(t).

    We solve the same ODE in s = log(2t - 1) for the residual r = z - log ntk(t) (zero at
    initialisation, so float32 keeps its digits):

        dr/ds = W_down . act(W_up . (r + 2 log ntk(t))) * (2t - 1)/2,   log ntk linear in s,

    the xi term is gone with the stiff 1/(2t-1) near t = 1, so a few fixed rk4 steps match a dopri5
    solve at 1e-9 tolerance (see benchmarks/ode_overhead.py), and W_up . log ntk(t) is affine in s, so
    each evaluation is seven small ops.
    ``ntk_base``: the b inside ntk(t); by default the model's base (z(t) starts on log ntk(t)). The official
    code uses 10000 whatever the model's base (Mixtral's is 1e6): ``ntk_base=10000`` reproduces it.

    ``up_init``: W_up's initial weights. ``linear`` (null, the default): nn.Linear's kaiming-uniform(a = sqrt 5)
    on our [width, d/2] weight, bound 1/sqrt(d/2). ``official``: the same rule on the official [d/2, width]
    tensor (applied as x @ W), bound 1/sqrt(width) = 1/sqrt(lambda d): sqrt(2) smaller at lambda = 1.

    ``dynamics="discrete"`` is the ablation that only knows integer t:
    z(k+1) = z(k) + [log ntk(k+1) - log ntk(k)] + W_down . act(W_up . (z(k) + log ntk(k))); a
    non-integer t is rounded up.
    """

    samples_scale = True

    def __init__(
        self,
        *args,
        max_scale: float = 8.0,
        amplification: float = 1.0,
        projection_width: int | None = None,
        activation: str = "tanh",
        dynamics: str = "continuous",
        method: str = "rk4",
        step_size: float = 0.5,
        max_step_t: float = 1.0,
        rtol: float = 1e-6,
        atol: float = 1e-8,
        beyond_max: str = "clamp",
        eval_scale: str = "ceil",
        ntk_base: float | None = None,
        up_init: str | None = None,
        **kwargs,
    ):
        super().__init__(*args, eval_scale=eval_scale, **kwargs)
        check_options(max_scale, activation, dynamics, method, beyond_max, step_size, max_step_t, ntk_base, up_init)
        width = int(projection_width) if projection_width else int(round(amplification * self.rotary_dim))
        if width < 1:
            raise ConfigError(f"strategy.projection_width / amplification give width {width}; it must be >= 1")
        half = self.rotary_dim // 2
        self.max_scale = float(max_scale)
        self.width = width
        self.activation = activation
        self.dynamics = dynamics
        self.method = method
        self.step_size = float(step_size)
        self.max_step_t = float(max_step_t)
        self.rtol, self.atol = float(rtol), float(atol)
        self.beyond_max = beyond_max
        self.ntk_base = float(ntk_base) if ntk_base is not None else self.base
        self.up = nn.Linear(half, width, bias=False)  # kaiming-uniform(a=sqrt 5), nn.Linear's default
        if up_init == "official":  # the same rule on the transposed tensor: fan-in = width
            nn.init.kaiming_uniform_(self.up.weight.T, a=math.sqrt(5))
        self.up_init = up_init or "linear"
        self.down = nn.Linear(width, half, bias=False)
        nn.init.zeros_(self.down.weight)
        # -2j/d and -2j/(d-2): log ntk(t)_j = exponent_j * log b + slope_j * log(2t - 1)
        j = torch.arange(half, dtype=torch.float32)
        self.register_buffer("exponent", -2 * j / self.rotary_dim, persistent=False)
        self.register_buffer("slope", -2 * j / (self.rotary_dim - 2), persistent=False)
        self._cache = None  # (parameter values, grid log inv_freq [T_max, d/2]) for evaluation

    def _apply(self, fn, recurse=True):
        self._cache = None  # a move or cast: solve again where the parameters now are
        return super()._apply(fn, recurse)

    def start_from(self, *args, **kwargs):
        super().start_from(*args, **kwargs)
        self._cache = None  # z(1) moved: solve again

    # --- the dynamics -------------------------------------------------------------------------
    def log_ntk(self, log_alpha: torch.Tensor) -> torch.Tensor:
        """log ntk(t) as a function of log alpha = log(2t - 1)."""
        return self.exponent * math.log(self.ntk_base) + self.slope * log_alpha

    def learned_term(self, z: torch.Tensor, log_alpha: torch.Tensor) -> torch.Tensor:
        """W_down . act(W_up . (z + log ntk(t)))."""
        return self.down(ACTIVATIONS[self.activation](self.up(z + self.log_ntk(log_alpha))))

    def _solve(self, ts: torch.Tensor) -> torch.Tensor:
        """log inv_freq at each t of the increasing tensor ts (ts[0] = 1); returns [len(ts), d/2]."""
        z0 = torch.log(self.base_inv_freq).float()
        with torch.autocast(device_type=z0.device.type, enabled=False):  # float32 under any autocast
            if self.dynamics == "discrete":
                return self._solve_discrete(ts, z0)
            s = torch.log(2 * ts.double() - 1).float()
            if len(ts) == 1 or float(ts[-1]) == 1.0:
                return z0.expand(len(ts), -1)
            offset = self.exponent * math.log(self.ntk_base)  # log ntk(t) = offset + slope * s
            # W_up . 2 log ntk(t) = shift + s * tilt, once per solve: the solve is hundreds of ops on
            # d/2-vectors, and their count, not their size, is its cost (so mv, not Linear)
            shift, tilt = torch.mv(self.up.weight, 2 * offset), torch.mv(self.up.weight, 2 * self.slope)
            act = ACTIVATIONS[self.activation]

            def dr_ds(s, r):  # dt/ds = (2t - 1)/2 = e^(s - log 2)
                hidden = act(torch.addmv(torch.addcmul(shift, tilt, s), self.up.weight, r))
                return torch.mv(self.down.weight, hidden) * torch.exp(s - math.log(2))

            options = {"grid_constructor": self._grid} if self.method in FIXED_STEP_METHODS else {}
            r = odeint(dr_ds, z0 - offset, s, method=self.method, rtol=self.rtol, atol=self.atol, options=options)
            return r + offset + self.slope * s[:, None]

    def _grid(self, func, y0, s):
        """The fixed-step grid: it lands on every output time, and each step is at most step_size in
        s = log(2t - 1) and at most max_step_t in t (the learned term grows like 2t - 1 in s)."""
        points = [float(s[0])]
        for target in s[1:].tolist():
            while points[-1] < target - 1e-9:
                t_now = (math.exp(points[-1]) + 1) / 2
                points.append(min(points[-1] + self.step_size, math.log(2 * (t_now + self.max_step_t) - 1), target))
            points[-1] = target
        return torch.tensor(points, dtype=s.dtype, device=s.device)

    def _solve_discrete(self, ts: torch.Tensor, z0: torch.Tensor) -> torch.Tensor:
        last = int(math.ceil(float(ts[-1])))
        zs = [z0]
        for k in range(1, last):
            log_alpha_k = torch.tensor(math.log(2 * k - 1), device=z0.device)
            log_alpha_next = torch.tensor(math.log(2 * k + 1), device=z0.device)
            step = self.log_ntk(log_alpha_next) - self.log_ntk(log_alpha_k) + self.learned_term(zs[-1], log_alpha_k)
            zs.append(zs[-1] + step)
        index = torch.ceil(ts - 1e-6).long().clamp(min=1) - 1
        return torch.stack(zs)[index]

    # --- the strategy interface --------------------------------------------------------------
    def scale_for_length(self, seq_len: int) -> float:
        t = super().scale_for_length(seq_len)
        return min(t, self.max_scale) if self.beyond_max == "clamp" else t

    def _param_values(self) -> torch.Tensor:
        # the values, not storage versions: FSDP gathers parameters into reused buffers
        return torch.cat([p.detach().reshape(-1) for p in self.parameters()])

    def inv_freq(self, t: float) -> torch.Tensor:
        t = float(t)
        if not t >= 1:
            raise ValueError(f"CLEX needs t >= 1, got {t}")
        if t == 1.0:  # z(1) is the plain RoPE basis: no parameter, no graph into the angles
            return torch.exp(torch.log(self.base_inv_freq))  # exp(z(1)), bit for bit what a solve returns
        if torch.is_grad_enabled() and self.up.weight.requires_grad:  # training: one solve from 1 to t
            return torch.exp(self._solve(torch.tensor([1.0, t], device=self.base_inv_freq.device))[-1])
        if t != math.floor(t):
            return torch.exp(self._solve(torch.tensor([1.0, t], device=self.base_inv_freq.device))[-1])
        return torch.exp(self._grid_solution(int(t))[int(t) - 1])

    @torch.no_grad()
    def _grid_solution(self, t: int) -> torch.Tensor:
        """Cached solve over the integer grid 1..max(t, t_max), redone when the parameters change."""
        values = self._param_values()
        if self._cache is None or not torch.equal(self._cache[0], values) or len(self._cache[1]) < t:
            last = max(t, int(math.ceil(self.max_scale)))
            grid = torch.arange(1, last + 1, dtype=torch.float32, device=self.base_inv_freq.device)
            self._cache = (values.clone(), self._solve(grid))
        return self._cache[1]

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, max_scale={self.max_scale:g}, width={self.width}, "
            f"activation={self.activation}, dynamics={self.dynamics}, method={self.method}, "
            f"step_size={self.step_size:g}, beyond_max={self.beyond_max}, ntk_base={self.ntk_base:g}, "
            f"up_init={self.up_init}"
        )
