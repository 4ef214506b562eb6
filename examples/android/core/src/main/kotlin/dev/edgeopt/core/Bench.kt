package dev.edgeopt.core

import kotlin.math.floor
import kotlin.math.sqrt

/** Percentiles as numpy's default (linear between closest ranks), so figures match edgeopt's. */
data class BenchStats(val p50: Double, val p90: Double, val p99: Double, val mean: Double, val std: Double,
                      val min: Double, val max: Double) {
    companion object {
        fun percentile(samples: List<Double>, q: Double): Double {
            require(samples.isNotEmpty()) { "percentile of no samples" }
            val s = samples.sorted()
            val pos = (s.size - 1) * q / 100.0
            val lo = floor(pos).toInt(); val hi = minOf(lo + 1, s.size - 1)
            return s[lo] + (s[hi] - s[lo]) * (pos - lo)
        }

        fun of(samples: List<Double>): BenchStats {
            val mean = samples.average()
            val std = sqrt(samples.sumOf { (it - mean) * (it - mean) } / samples.size)
            return BenchStats(percentile(samples, 50.0), percentile(samples, 90.0), percentile(samples, 99.0),
                              mean, std, samples.min(), samples.max())
        }
    }
}

/** Where the benchmark ran: what the report shows beside the compile's own figures. */
data class DeviceInfo(val model: String, val abi: String, val sdk: Int)

/**
 * The benchmark screen's result, written as the JSON `edgeopt report BUNDLE --device-bench
 * FILE` reads (format `edgeopt-device-bench`, version 1). The model's sha256 ties it to
 * the bundle it was measured on.
 */
data class DeviceBench(val manifest: Manifest, val device: DeviceInfo, val provider: String, val skipped: List<Skipped>,
                       val threads: Int, val sequence: Int, val warmup: Int, val samplesMs: List<Double>) {
    fun toJson(): String {
        val s = BenchStats.of(samplesMs)
        return Json.write(linkedMapOf(
            "format" to FORMAT, "version" to VERSION,
            "bundle" to linkedMapOf("target" to manifest.target, "task" to manifest.task,
                                    "model_sha256" to manifest.files.getValue(manifest.model).sha256),
            "device" to linkedMapOf("model" to device.model, "abi" to device.abi, "sdk" to device.sdk),
            "provider" to provider,
            "providers_requested" to manifest.providers,
            "providers_skipped" to skipped.map { linkedMapOf("provider" to it.attempt.label, "reason" to it.reason) },
            "threads" to threads, "batch" to 1, "sequence" to sequence,
            "warmup" to warmup, "repeats" to samplesMs.size,
            "latency_ms" to linkedMapOf("p50" to s.p50, "p90" to s.p90, "p99" to s.p99, "mean" to s.mean,
                                        "std" to s.std, "min" to s.min, "max" to s.max),
            "samples_ms" to samplesMs,
        ))
    }

    companion object {
        const val FORMAT = "edgeopt-device-bench"
        const val VERSION = 1

        /** Time [repeats] runs of [once] after [warmup] untimed ones, in milliseconds. */
        fun measure(warmup: Int, repeats: Int, clockNs: () -> Long = System::nanoTime, once: () -> Unit): List<Double> {
            require(repeats >= 3) { "a benchmark needs at least 3 timed runs" }
            repeat(warmup) { once() }
            return List(repeats) {
                val t0 = clockNs(); once(); (clockNs() - t0) / 1e6
            }
        }
    }
}
