// AXI-stream harness for one FINN RTL node compiled by Verilator (bnnflow sim --rtl).
//
// The node is a Verilated top `Vtop` with one input stream and one output stream; ports.h
// (written per node by hw/rtl/compile.py) names them and gives their byte widths.
//
//   harness IN OUT N_IN N_OUT SEED GAP_PCT STALL_PCT MAX_IDLE
//
// IN holds N_IN input words of IN_BYTES bytes each, little-endian (FINN's rtlsim packing);
// the received output words go to OUT the same way. On every cycle the source leaves a
// gap (TVALID low) with probability GAP_PCT/100 before it offers the next word, and the sink
// withholds TREADY with probability STALL_PCT/100 (seeded: runs repeat exactly). A word moves
// only when TVALID and TREADY are both high at a rising clock edge; once the source raises
// TVALID it holds it and the word until the handshake, and the harness checks that the node
// does the same on its output (a word it offered must stay offered, unchanged, until taken).
// The run ends when N_OUT words came out, or after MAX_IDLE cycles without any handshake.
// One JSON line on stdout: words moved, cycles, protocol violations, whether it timed out.

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "Vtop.h"
#include "verilated.h"
#include "ports.h"

namespace {

// Verilator holds ports of up to 64 bits in integers and wider ones in VlWide (32-bit words).
template <typename T>
void put(T& port, const uint8_t* b, int n) {
    uint64_t v = 0;
    for (int i = 0; i < n && i < 8; ++i) v |= uint64_t(b[i]) << (8 * i);
    port = static_cast<T>(v);
}

template <std::size_t W>
void put(VlWide<W>& port, const uint8_t* b, int n) {
    for (std::size_t w = 0; w < W; ++w) {
        uint32_t v = 0;
        for (int k = 0; k < 4; ++k) {
            const int i = int(4 * w) + k;
            if (i < n) v |= uint32_t(b[i]) << (8 * k);
        }
        port[w] = v;
    }
}

template <typename T>
void get(const T& port, uint8_t* b, int n) {
    const uint64_t v = uint64_t(port);
    for (int i = 0; i < n; ++i) b[i] = i < 8 ? uint8_t(v >> (8 * i)) : 0;
}

template <std::size_t W>
void get(const VlWide<W>& port, uint8_t* b, int n) {
    for (int i = 0; i < n; ++i) {
        const std::size_t w = std::size_t(i) / 4;
        b[i] = w < W ? uint8_t(port[w] >> (8 * (i % 4))) : 0;
    }
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 9) {
        std::fprintf(stderr, "usage: %s IN OUT N_IN N_OUT SEED GAP_PCT STALL_PCT MAX_IDLE\n", argv[0]);
        return 2;
    }
    const long n_in = std::atol(argv[3]), n_out = std::atol(argv[4]);
    const unsigned seed = unsigned(std::strtoul(argv[5], nullptr, 10));
    const int gap_pct = std::atoi(argv[6]), stall_pct = std::atoi(argv[7]);
    const long max_idle = std::atol(argv[8]);

    std::vector<uint8_t> in(size_t(n_in) * IN_BYTES), out(size_t(n_out) * OUT_BYTES, 0);
    FILE* f = std::fopen(argv[1], "rb");
    if (!f || std::fread(in.data(), 1, in.size(), f) != in.size()) {
        std::fprintf(stderr, "harness: cannot read %ld words from %s\n", n_in, argv[1]);
        return 2;
    }
    std::fclose(f);

    VerilatedContext ctx;
    ctx.randReset(0);  // registers without reset start at 0, as in FINN's own rtlsim
    Vtop top(&ctx);
    std::mt19937 rng(seed);
    std::uniform_int_distribution<int> pct(0, 99);

    auto tick = [&]() {
        top.CLK = 1;
        top.eval();
        top.CLK = 0;
        top.eval();
    };
    top.CLK = 0;
    top.RST_N = 0;
    top.IN_VALID = 0;
    top.OUT_READY = 0;
    top.eval();
    for (int i = 0; i < 16; ++i) tick();
    top.RST_N = 1;
    top.eval();

    long sent = 0, got = 0, cycle = 0, idle = 0, first_in = -1, last_out = -1, violations = 0;
    bool offering = false, out_pending = false;
    std::vector<uint8_t> pending(OUT_BYTES), now(OUT_BYTES);
    while (got < n_out && idle < max_idle) {
        // inputs for this cycle (the source keeps an offered word until it is taken)
        if (!offering && sent < n_in && pct(rng) >= gap_pct) {
            offering = true;
            put(top.IN_DATA, &in[size_t(sent) * IN_BYTES], IN_BYTES);
        }
        top.IN_VALID = offering;
        top.OUT_READY = pct(rng) >= stall_pct;
        top.eval();
        // what the rising edge will see
        const bool in_fire = offering && top.IN_READY;
        const bool out_valid = top.OUT_VALID;
        get(top.OUT_DATA, now.data(), OUT_BYTES);
        if (out_pending && (!out_valid || std::memcmp(now.data(), pending.data(), OUT_BYTES) != 0)) ++violations;
        const bool out_fire = out_valid && top.OUT_READY;
        if (out_fire) {
            if (got < n_out) std::memcpy(&out[size_t(got) * OUT_BYTES], now.data(), OUT_BYTES);
            ++got;
            last_out = cycle;
        }
        out_pending = out_valid && !out_fire;
        if (out_pending) pending = now;
        tick();
        if (in_fire) {
            if (first_in < 0) first_in = cycle;
            ++sent;
            offering = false;
        }
        idle = (in_fire || out_fire) ? 0 : idle + 1;
        ++cycle;
    }
    top.final();

    f = std::fopen(argv[2], "wb");
    const size_t n_write = size_t(got < n_out ? got : n_out) * OUT_BYTES;
    if (!f || std::fwrite(out.data(), 1, n_write, f) != n_write) {
        std::fprintf(stderr, "harness: cannot write %s\n", argv[2]);
        return 2;
    }
    std::fclose(f);
    std::printf("{\"sent\": %ld, \"received\": %ld, \"cycles\": %ld, \"first_input\": %ld, \"last_output\": %ld, "
                "\"protocol_violations\": %ld, \"timed_out\": %s}\n",
                sent, got, cycle, first_in, last_out, violations, got < n_out ? "true" : "false");
    return 0;
}
