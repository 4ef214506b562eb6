package dev.edgeopt.core

/** One way to open the session: the providers to register, in order, and the session flags. */
data class ProviderAttempt(val providers: List<String>, val disableCpuFallback: Boolean) {
    /** What the screen shows: the first provider, the one that takes the graph. */
    val label: String get() = providers.first()
}

/** Why an attempt was not used; shown beside the provider the session got. */
data class Skipped(val attempt: ProviderAttempt, val reason: String)

data class Opened(val session: ModelSession, val attempt: ProviderAttempt, val skipped: List<Skipped>)

object ProviderPlan {
    const val CPU = "CPUExecutionProvider"

    /**
     * The attempts for a manifest on a device that has [available] providers: each
     * manifest provider in order (with the CPU EP behind it as host), then the CPU alone.
     * When the manifest says `cpu_ep_fallback: false` (qnn-int8: the NPU must take the
     * whole graph) an accelerator attempt forbids CPU fallback and the CPU alone is only
     * tried if the manifest lists it as a provider of its own.
     */
    fun attempts(manifest: Manifest, available: Set<String>): Pair<List<ProviderAttempt>, List<String>> {
        val out = ArrayList<ProviderAttempt>()
        val missing = ArrayList<String>()
        // Recipes spell some names their own way (NNAPIExecutionProvider, onnxruntime's
        // NnapiExecutionProvider): providers match ignoring case.
        val accelerators = manifest.providers.filter { !it.equals(CPU, ignoreCase = true) }
        for (ep in accelerators) {
            if (available.any { it.equals(ep, ignoreCase = true) }) {
                out.add(ProviderAttempt(listOf(ep, CPU), !manifest.cpuEpFallback))
            } else {
                missing.add(ep)
            }
        }
        val cpuListed = manifest.providers.any { it.equals(CPU, ignoreCase = true) }
        if (manifest.cpuEpFallback || cpuListed && accelerators.isEmpty()) out.add(ProviderAttempt(listOf(CPU), false))
        return out to missing
    }

    /** Open the first attempt that loads; a failed load moves to the next, keeping why. */
    fun open(manifest: Manifest, available: Set<String>, opener: (ProviderAttempt) -> ModelSession): Opened {
        val (attempts, missing) = attempts(manifest, available)
        val skipped = ArrayList<Skipped>()
        missing.forEach { skipped.add(Skipped(ProviderAttempt(listOf(it, CPU), !manifest.cpuEpFallback), "not on this device")) }
        for (attempt in attempts) {
            try {
                return Opened(opener(attempt), attempt, skipped)
            } catch (e: Exception) {
                skipped.add(Skipped(attempt, e.message ?: e.toString()))
            }
        }
        throw BundleException("no provider the manifest allows could open the model: " +
            skipped.joinToString("; ") { "${it.attempt.label}: ${it.reason}" })
    }
}
