{
  "targets": [
    {
      "target_name": "postcopy",
      "sources": ["native/postcopy.c"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-std=gnu11"]
    },
    {
      "target_name": "pcref",
      "type": "executable",
      "sources": ["bench/reference/pcref.c"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-std=gnu11", "-pthread"],
      "ldflags": ["-pthread"]
    },
    {
      "target_name": "pckeeper",
      "type": "executable",
      "sources": ["native/pckeeper.c"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-std=gnu11"]
    }
  ]
}
