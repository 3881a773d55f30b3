def test_full_loop_smoke(project):
    ran, logged = project.loop(100, description="baseline")
    assert ran["verdict"] == "baseline" and logged["status"] == "keep"
    ran, logged = project.loop(90, description="faster")
    assert ran["verdict"] == "improved" and logged["git"]["action"] == "commit"
    assert "Autotune-Metric: time_ms=90 ms" in project.git("log", "-1", "--format=%B")
