# guestprep-script: remove-vmware-tools
# guestprep-output: text
# First-boot task (SYSTEM): on KVM only, uninstall VMware Tools, then remove the task.
# Written to the guest with lib.ps1 in front (Invoke-Native, task helpers, log); the product
# code is the one positional argument (tasks installed by older versions pass -ProductCode X).
Set-StrictMode -Version 2.0
$ErrorActionPreference = 'Stop'
$ProductCode = ''
foreach ($a in @($args)) { if ([string]$a -match '^\{[0-9A-Fa-f-]{36}\}$') { $ProductCode = [string]$a } }
$cs = Get-CimInstance -ClassName Win32_ComputerSystem
if ([string]$cs.Manufacturer -match 'VMware') {
    Write-GuestprepLog -Name 'remove-vmware-tools' -Message 'still on VMware: waiting'
    exit 0
}
if ($ProductCode -eq '') { throw ('no MSI product code among the arguments: ' + (@($args) -join ' ')) }
$proc = Start-Process -FilePath 'msiexec.exe' -ArgumentList @('/x', $ProductCode, '/qn', '/norestart') -Wait -PassThru
Write-GuestprepLog -Name 'remove-vmware-tools' -Message ('msiexec /x ' + $ProductCode + ' exited ' + $proc.ExitCode)
# 3010: removed, reboot required; 1605: not installed (someone removed it already)
if ($proc.ExitCode -eq 0 -or $proc.ExitCode -eq 3010 -or $proc.ExitCode -eq 1605) {
    $null = Remove-GuestprepTask -Name 'guestprep-remove-vmware-tools'
    Write-GuestprepLog -Name 'remove-vmware-tools' -Message 'done, task removed'
}
