// The edgeopt Android example: `app` (the Android app) and `core` (its logic in plain
// Kotlin, no Android APIs; built and unit-tested on the JVM by edgeopt's CI with kotlinc).
pluginManagement {
    repositories {
        google()
        mavenCentral()
        gradlePluginPortal()
    }
}

dependencyResolutionManagement {
    repositoriesMode.set(RepositoriesMode.FAIL_ON_PROJECT_REPOS)
    repositories {
        google()
        mavenCentral()
    }
}

rootProject.name = "edgeopt-android-example"
include(":core", ":app")
