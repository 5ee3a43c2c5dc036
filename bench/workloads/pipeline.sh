# 2 GiB of zeros through a two-stage pipeline.
head -c 2G /dev/zero | wc -c
