{
  "targets": [
    {
      "target_name": "postcopy",
      "sources": ["native/postcopy.c"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-std=gnu11"]
    }
  ]
}
