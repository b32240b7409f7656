"""PyTorch's kernels for one training step of 784-W-W-26 at batch B (torch.profiler, CUDA time
per kernel, averaged over the profiled steps), for the same precisions as bench/cuda_vs_torch.py."""
import sys, torch
from torch.profiler import profile, ProfilerActivity
W, B = int(sys.argv[1]), int(sys.argv[2])
for prec in ["fp32", "tf32", "bf16"]:
    torch.backends.cuda.matmul.allow_tf32 = prec == "tf32"
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(784, W), torch.nn.Sigmoid(), torch.nn.Linear(W, W),
                                torch.nn.Sigmoid(), torch.nn.Linear(W, 26)).cuda()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.rand(B, 784, device="cuda"); y = torch.randint(0, 26, (B,), device="cuda")
    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=prec == "bf16"):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward(); opt.step()
    for _ in range(20): step()
    torch.cuda.synchronize()
    steps = 50
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps): step()
        torch.cuda.synchronize()
    kernels = {}
    for e in prof.events():
        if e.device_type == torch.autograd.DeviceType.CUDA:
            t = getattr(e, "device_time", None) or getattr(e, "cuda_time", 0)
            k = kernels.setdefault(e.name, [0, 0.0]); k[0] += 1; k[1] += t
    total = sum(v[1] for v in kernels.values()) / steps
    print(f"## PyTorch {torch.__version__}, {prec}, 784-{W}-{W}-26, batch {B}: {total:.1f} us of kernels per step")
    print("| kernel | calls/step | us/step |\n|---|---:|---:|")
    for name, (n, t) in sorted(kernels.items(), key=lambda kv: -kv[1][1]):
        print(f"| {name[:110]} | {n / steps:.0f} | {t / steps:.1f} |")
    print()
