// Plain Kotlin/JVM: manifest + hash verification, provider plan, WordPiece tokenizer,
// post-processing, greedy generation over the ModelSession interface, bench JSON.
plugins {
    id("org.jetbrains.kotlin.jvm")
}

kotlin {
    jvmToolchain(17)
}

dependencies {
    testImplementation(kotlin("test-junit"))
    testImplementation("junit:junit:4.13.2")
}

// The tests read bundles and Python's expected values from a fixtures file that edgeopt's
// tests/test_android_core.py writes: ./gradlew :core:test -Pedgeopt.fixtures=/path/fixtures.json
tasks.test {
    project.findProperty("edgeopt.fixtures")?.let { systemProperty("edgeopt.fixtures", it) }
    onlyIf { project.hasProperty("edgeopt.fixtures") }
}
