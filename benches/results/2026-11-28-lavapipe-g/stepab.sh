#!/bin/bash
# stepab.sh MODEL LO HI bin1 bin2 ... : CPU and wall ms per step from runs of LO and HI seconds
M=$1; LO=$2; HI=$3; shift 3
export XDG_RUNTIME_DIR=/tmp VK_DRIVER_FILES=/usr/share/vulkan/icd.d/lvp_icd.x86_64.json
echo "# $(date -u +%H:%M:%S) host probe: $(/tmp/host_probe | tr '\n' ' ')"
for b in "$@"; do
  for s in $LO $HI; do
    /usr/bin/time -f "%U %S %e" -o /tmp/t.$s /tmp/$b bench --steps --model $M --batches 128 --submits 1 --min-seconds $s 2>&1 | tail -1 | awk '{print $4}' > /tmp/n.$s
  done
  python3 -c "
u1,s1,e1=map(float,open('/tmp/t.$LO').read().split()); u8,s8,e8=map(float,open('/tmp/t.$HI').read().split())
n1=int(open('/tmp/n.$LO').read()); n8=int(open('/tmp/n.$HI').read())
print('$b $M', 'cpu ms/step %.1f'%(1000*((u8+s8)-(u1+s1))/(n8-n1)), 'wall ms/step %.1f'%(1000*(e8-e1)/(n8-n1)), 'steps', n1, n8)"
done
echo "# $(date -u +%H:%M:%S) host probe: $(/tmp/host_probe | tr '\n' ' ')"
